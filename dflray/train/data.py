"""Training data: Parquet facesets → augmented sample batches on Ray Data.

Each faceset is read with ``ray.data.read_parquet`` (committed runs only), shuffled every epoch, and
turned into training samples by CPU tasks (crop to the model's face type and resolution, random warp,
flips, HSV, colour transfer — ``dflray.train.augment``). Ray Train splits each dataset across the
workers, so every rank gets its own shard; the training workers only move tensors to their device.

Before any worker starts, ``inspect_faceset`` and ``check_inputs`` reject what cannot train: a missing
or empty faceset, mixed face types, src and dst of different face types or crop sizes, a model face type
wider than the faceset's, fewer faces than one global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dflray.config import FACE_TYPE_ORDER, ConfigError, TrainConfig
from dflray.faceset import committed_face_files, read_faces
from dflray.io.storage import arrow_filesystem, exists, join

SAMPLE_COLUMNS = ["image", "landmarks", "align_mat", "face_type", "mask", "mask_source", "xseg", "yaw"]
YAW_BINS = 128  # DFL's uniform_yaw bin count
MAX_YAW_REPEAT = 16  # a rare yaw is repeated at most this often per epoch (bounds the epoch size)
CT_REFERENCES = 256  # dst crops kept for colour transfer of src samples
# Each pass over a Ray dataset costs a pipeline start (seconds); small facesets are repeated so that one
# pass yields at least this many samples (each repeat is augmented afresh, so nothing is seen twice).
MIN_EPOCH_SAMPLES = 4096


@dataclasses.dataclass(frozen=True)
class FacesetInfo:
    """What training needs to know about a faceset before it starts."""

    uri: str
    faces: int
    face_type: str
    size: int
    yaw: np.ndarray


def inspect_faceset(uri: str, role: str) -> FacesetInfo:
    """Reads a faceset's metadata (no images) and rejects one that cannot train.

    Raises:
        ConfigError: naming ``role`` (``src`` or ``dst``) when the faceset is missing, empty or mixed.
    """
    if not exists(join(uri, "faces")):
        raise ConfigError(role, f"{uri} is not a faceset (no faces/ folder); run dflray extract first")
    table = read_faces(uri, columns=["face_type", "size", "yaw"])
    if table.num_rows == 0:
        raise ConfigError(role, f"{uri} has no faces")
    types = sorted(set(table.column("face_type").to_pylist()))
    sizes = sorted(set(table.column("size").to_pylist()))
    if len(types) > 1 or len(sizes) > 1:
        raise ConfigError(role, f"{uri} mixes face types {types} / crop sizes {sizes}; extract it with one align config")
    yaw = np.nan_to_num(table.column("yaw").to_numpy(zero_copy_only=False).astype(np.float32))
    return FacesetInfo(uri=uri, faces=table.num_rows, face_type=types[0], size=int(sizes[0]), yaw=yaw)


def check_inputs(cfg: TrainConfig, src: FacesetInfo, dst: FacesetInfo) -> None:
    """Rejects a src/dst pair the model cannot train on, before any worker starts.

    Raises:
        ConfigError: naming the offending field.
    """
    if src.face_type != dst.face_type:
        raise ConfigError("dst", f"face type {dst.face_type!r} differs from src's {src.face_type!r}")
    if src.size != dst.size:
        raise ConfigError("dst", f"crop size {dst.size} differs from src's {src.size}")
    if FACE_TYPE_ORDER[cfg.model.face_type] > FACE_TYPE_ORDER[src.face_type]:
        raise ConfigError("model.face_type", f"{cfg.model.face_type!r} is wider than the facesets' "
                          f"{src.face_type!r}; extract with a wider align.face_type or train a narrower one")
    need = cfg.batch_size * cfg.num_workers
    for role, info in (("src", src), ("dst", dst)):
        if info.faces < need:
            raise ConfigError(role, f"{info.uri} has {info.faces} faces, fewer than one global batch "
                              f"(batch_size {cfg.batch_size} x num_workers {cfg.num_workers} = {need})")


def yaw_repeats(yaw_deg: np.ndarray, bins: int = YAW_BINS, max_repeat: int = MAX_YAW_REPEAT) -> np.ndarray:
    """Per-bin repeat counts (DFL's yaw bins) that make yaw bins about equally frequent per epoch.

    DFL's ``uniform_yaw`` draws a yaw bin uniformly, then a face in it. A streaming dataset cannot
    draw, so each face is repeated ``round(largest bin / its bin)`` times (capped at ``max_repeat``)
    before the epoch's shuffle: frontal faces stay once, rare profiles come back more often.

    Args:
        yaw_deg: the faceset's ``yaw`` column (degrees).
    """
    from dflray.train.augment import yaw_bin_index

    counts = np.bincount(yaw_bin_index(yaw_deg, bins), minlength=bins)
    repeats = np.where(counts > 0, np.clip(np.round(counts.max() / np.maximum(counts, 1)), 1, max_repeat), 0)
    return repeats.astype(np.int64)


def _repeat_rows(row: dict[str, Any], times: int, yaw_repeats: np.ndarray | None) -> list[dict[str, Any]]:
    if yaw_repeats is not None:
        from dflray.train.augment import yaw_bin_index

        b = int(yaw_bin_index(np.array([row["yaw"]], dtype=np.float64), len(yaw_repeats))[0])
        times *= max(1, int(yaw_repeats[b]))
    return [row] * times


def epoch_plan(info: FacesetInfo, cfg: TrainConfig) -> tuple[int, np.ndarray | None, int]:
    """How one pass over a faceset's dataset is built: (repeat of every row, per-yaw-bin repeats or
    None, samples per pass)."""
    yaw = yaw_repeats(info.yaw) if cfg.augment.uniform_yaw else None
    if yaw is not None:
        from dflray.train.augment import yaw_bin_index

        per_pass = int(yaw[yaw_bin_index(info.yaw, len(yaw))].sum())
    else:
        per_pass = info.faces
    times = max(1, -(-MIN_EPOCH_SAMPLES // per_pass))
    return times, yaw, times * per_pass


def _present(v: Any) -> bool:
    return isinstance(v, (bytes, bytearray, np.bytes_)) and len(v) > 0  # Ray Data may give b"" for null


def training_masks(batch: dict[str, Any]) -> np.ndarray:
    """The face mask each row trains with (encoded, stored-crop size), or None to rebuild the hull.

    An XSeg mask (``xseg``, written by ``dflray xseg apply``) wins: it leaves out what covers the face, so
    the masked loss does not learn hands or glasses. Otherwise the stored mask is the landmark hull, which
    augment rebuilds exactly in the training crop, so only another learned mask is worth decoding.
    """
    xseg = batch.get("xseg")
    out = []
    for i, (m, src) in enumerate(zip(batch["mask"], batch["mask_source"])):
        if xseg is not None and _present(xseg[i]):
            out.append(xseg[i])
        else:
            out.append(m if src not in (None, "hull") else None)
    return np.array(out, dtype=object)


def _make_samples(batch: dict[str, np.ndarray], *, resolution: int, face_type: str, augment, flip: bool,
                  ct_refs: np.ndarray | None) -> dict[str, np.ndarray]:
    from dflray.train.augment import make_batch

    batch = {**batch, "mask": training_masks(batch)}
    rng = np.random.default_rng()  # fresh entropy per batch: every epoch sees new augmentations
    return make_batch(batch, resolution, face_type, augment, rng, flip, ct_refs=ct_refs)


def build_dataset(info: FacesetInfo, cfg: TrainConfig, role: str, ct_refs: np.ndarray | None = None):
    """The Ray Data pipeline of one faceset's training samples (re-executed, reshuffled, every epoch).

    Args:
        info: from ``inspect_faceset``.
        cfg: the effective training config.
        role: ``src`` or ``dst`` (picks the flip option; colour transfer applies to src only).
        ct_refs: dst training crops (N×R×R×3 uint8 RGB) that src samples are colour-transferred toward.
    """
    import ray

    fs, _ = arrow_filesystem(info.uri)
    ds = ray.data.read_parquet(committed_face_files(info.uri), filesystem=fs).select_columns(SAMPLE_COLUMNS)
    times, yaw, _ = epoch_plan(info, cfg)
    if times > 1 or yaw is not None:
        ds = ds.flat_map(_repeat_rows, fn_kwargs={"times": times, "yaw_repeats": yaw}, num_cpus=cfg.augment_cpus)
    ds = ds.random_shuffle()
    flip = cfg.augment.random_src_flip if role == "src" else cfg.augment.random_dst_flip
    return ds.map_batches(
        _make_samples, batch_size=cfg.batch_size, num_cpus=cfg.augment_cpus, batch_format="numpy",
        fn_kwargs={"resolution": cfg.model.resolution, "face_type": cfg.model.face_type, "augment": cfg.augment,
                   "flip": flip, "ct_refs": ct_refs if role == "src" else None})


def fixed_samples(uri: str, cfg: TrainConfig, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` evenly spaced faces as un-augmented training samples (previews, colour references)."""
    from dflray.train.augment import make_batch

    table = read_faces(uri, columns=SAMPLE_COLUMNS)
    idx = np.unique(np.linspace(0, table.num_rows - 1, min(count, table.num_rows)).round().astype(int))
    rows = table.take(idx).to_pydict()
    batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
    batch["landmarks"] = np.array(rows["landmarks"], dtype=np.float32)
    batch["align_mat"] = np.array(rows["align_mat"], dtype=np.float64)
    batch["mask"] = training_masks(batch)
    plain = dataclasses.replace(cfg.augment, random_warp=False, rotation=0.0, scale=0.0, shift=0.0,
                                random_hsv_power=0.0, ct_mode="none")
    return make_batch(batch, cfg.model.resolution, cfg.model.face_type, plain, np.random.default_rng(seed), False)


def ct_references(dst: FacesetInfo, cfg: TrainConfig) -> np.ndarray | None:
    """dst training crops (uint8 RGB) for ``ct_mode``, or None when colour transfer is off."""
    if cfg.augment.ct_mode == "none":
        return None
    target = fixed_samples(dst.uri, cfg, CT_REFERENCES)["target"]
    return np.ascontiguousarray((target.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8))
