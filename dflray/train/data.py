"""Training data: Parquet facesets → augmented sample batches on Ray Data.

Each faceset is read with ``ray.data.read_parquet`` (committed runs only), shuffled every epoch, and
turned into training samples by CPU tasks (crop to the model's face type and resolution, random warp,
flips, HSV, colour transfer — ``dflray.train.augment``). Ray Train splits each dataset across the
workers, so every rank gets its own shard; the training workers only move tensors to their device.

A fixed share of each src video (``holdout``: its last frames, so they are not near-duplicates of
trained neighbours) is never trained on; ``heldout_samples`` gives them to the reconstruction-SSIM check.
``dflray.train.local.FacesetSamples`` is the same sample stream without Ray, for plain PyTorch scripts.

Before any worker starts, ``inspect_faceset`` and ``check_inputs`` reject what cannot train: a missing
or empty faceset, mixed face types, src and dst of different face types or crop sizes, a model face type
wider than the faceset's, fewer faces than one global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dflray.config import FACE_TYPE_ORDER, ConfigError, TrainConfig
from dflray.faceset import read_faces
from dflray.io.storage import exists, join

SAMPLE_COLUMNS = ["image", "landmarks", "align_mat", "face_type", "mask", "mask_source", "xseg", "yaw"]
KEY_COLUMNS = ["video_id", "frame_index"]
HELDOUT_MAX = 64  # held-out faces the SSIM check uses (evenly spaced), bounding its cost per checkpoint
YAW_BINS = 128  # DFL's uniform_yaw bin count
MAX_YAW_REPEAT = 16  # a rare yaw is repeated at most this often per epoch (bounds the epoch size)
CT_REFERENCES = 256  # dst crops kept for colour transfer of src samples
# Each pass over a Ray dataset costs a pipeline start (seconds); small facesets are repeated so that one
# pass yields at least this many samples (each repeat is augmented afresh, so nothing is seen twice), or what
# the whole run needs if that is fewer: a pass is read, repeated and shuffled whole before its first batch.
MIN_EPOCH_SAMPLES = 4096
# ``data=auto``: a run that takes at most this many samples a worker from each faceset, on facesets of at
# most this many faces, draws them in its workers: a Ray Data pipeline's start (tens of seconds on 2 CPUs)
# would cost more than augmenting a few batches between steps.
SHORT_RUN_SAMPLES = 256
SHORT_RUN_FACES = 4096


@dataclasses.dataclass(frozen=True)
class FacesetInfo:
    """What training needs to know about a faceset before it starts."""

    uri: str
    faces: int
    face_type: str
    size: int
    yaw: np.ndarray
    cuts: dict[str, int] | None = None  # video_id → first held-out frame_index (src with holdout only)
    heldout: int = 0  # faces held out

    @property
    def train_faces(self) -> int:
        """Faces left for training after the hold-out."""
        return self.faces - self.heldout


def holdout_cuts(video_id: np.ndarray, frame_index: np.ndarray, share: float) -> tuple[dict[str, int], int]:
    """Where each video's held-out tail starts: its last ``ceil(share × faces)`` frames, never all of them.

    Args:
        video_id: the faces' video ids.
        frame_index: their frame indices.
        share: the share to hold out (0: none).

    Returns:
        ``({video_id: first held-out frame_index}, held-out face count)``; a video too short to give
        any (one frame) has no entry.

    Example:
        >>> holdout_cuts(np.array(["a"] * 10 + ["b"]), np.r_[np.arange(10), 0], 0.2)
        ({'a': 8}, 2)
    """
    cuts, held = {}, 0
    if share <= 0:
        return cuts, 0
    for vid in np.unique(video_id):
        frames = np.sort(frame_index[video_id == vid])
        k = min(int(np.ceil(share * len(frames))), len(frames) - 1)
        if k > 0:
            cuts[str(vid)] = int(frames[len(frames) - k])
            held += int((frames >= frames[len(frames) - k]).sum())
    return cuts, held


def is_heldout(video_id: str, frame_index: int, cuts: dict[str, int] | None) -> bool:
    """Whether a face is in the held-out tail of its video."""
    return bool(cuts) and video_id in cuts and frame_index >= cuts[video_id]


def inspect_faceset(uri: str, role: str, holdout: float = 0.0) -> FacesetInfo:
    """Reads a faceset's metadata (no images) and rejects one that cannot train.

    Args:
        uri: the faceset.
        role: ``src`` or ``dst`` (named in errors).
        holdout: share of each video's faces kept out of training (``TrainConfig.holdout``; src only).

    Raises:
        ConfigError: naming ``role`` (``src`` or ``dst``) when the faceset is missing, empty or mixed.
    """
    if not exists(join(uri, "faces")):
        raise ConfigError(role, f"{uri} is not a faceset (no faces/ folder); run dflray extract first")
    table = read_faces(uri, columns=["face_type", "size", "yaw", *KEY_COLUMNS])
    if table.num_rows == 0:
        raise ConfigError(role, f"{uri} has no faces")
    types = sorted(set(table.column("face_type").to_pylist()))
    sizes = sorted(set(table.column("size").to_pylist()))
    if len(types) > 1 or len(sizes) > 1:
        raise ConfigError(role, f"{uri} mixes face types {types} / crop sizes {sizes}; extract it with one align config")
    yaw = np.nan_to_num(table.column("yaw").to_numpy(zero_copy_only=False).astype(np.float32))
    cuts, held = holdout_cuts(np.asarray(table.column("video_id").to_pylist(), dtype=object),
                              table.column("frame_index").to_numpy(), holdout)
    return FacesetInfo(uri=uri, faces=table.num_rows, face_type=types[0], size=int(sizes[0]), yaw=yaw,
                       cuts=cuts or None, heldout=held)


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
        if info.train_faces < need:
            held = f" once {info.heldout} are held out (holdout {cfg.holdout:g})" if info.heldout else ""
            raise ConfigError(role, f"{info.uri} has {info.train_faces} faces{held}, fewer than one global batch "
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


def _repeat_rows(row: dict[str, Any], times: int, yaw_repeats: np.ndarray | None,
                 cuts: dict[str, int] | None = None) -> list[dict[str, Any]]:
    if is_heldout(row["video_id"], int(row["frame_index"]), cuts):
        return []
    if yaw_repeats is not None:
        from dflray.train.augment import yaw_bin_index

        b = int(yaw_bin_index(np.array([row["yaw"]], dtype=np.float64), len(yaw_repeats))[0])
        times *= max(1, int(yaw_repeats[b]))
    return [row] * times


def draws_in_worker(cfg: TrainConfig, faces: int, steps_left: int) -> bool:
    """Whether the workers draw their own samples (``deterministic``, ``data=worker``, or ``data=auto`` for
    a short run on a small faceset: see ``TrainConfig.data``) rather than take them from Ray Data."""
    if cfg.deterministic or cfg.data == "worker":
        return True
    if cfg.data == "ray":
        return False
    return steps_left * cfg.batch_size <= SHORT_RUN_SAMPLES and faces <= SHORT_RUN_FACES


def epoch_plan(info: FacesetInfo, cfg: TrainConfig, needed: int | None = None) -> tuple[int, np.ndarray | None, int]:
    """How one pass over a faceset's dataset is built: (repeat of every row, per-yaw-bin repeats or
    None, samples per pass). ``needed``: the samples the whole run takes from this faceset, when known; a
    pass is repeated up to ``MIN_EPOCH_SAMPLES`` or that, whichever is fewer (never under one pass)."""
    yaw = yaw_repeats(info.yaw) if cfg.augment.uniform_yaw else None
    if yaw is not None:
        from dflray.train.augment import yaw_bin_index

        per_pass = int(yaw[yaw_bin_index(info.yaw, len(yaw))].sum())
    else:
        per_pass = info.faces
    if needed is None:
        times = max(1, -(-MIN_EPOCH_SAMPLES // per_pass))
        return times, yaw, times * per_pass
    # A pass must really give the run what it needs, or the last steps wait for a whole new pass: the
    # hold-out's rows are dropped from it, and each worker's equal share loses its last partial batch.
    want = min(MIN_EPOCH_SAMPLES, max(1, needed) + cfg.batch_size * cfg.num_workers)
    usable = max(1.0, per_pass * info.train_faces / max(info.faces, 1))
    times = max(1, int(np.ceil(want / usable)))
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


def plain_samples(table, idx: np.ndarray, cfg: TrainConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows ``idx`` of a faces table (``SAMPLE_COLUMNS``) as un-augmented training samples: the crop
    the model sees at its face type and resolution, no warp, flip, colour shift or transfer."""
    from dflray.train.augment import make_batch

    rows = table.take(idx).to_pydict()
    batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
    batch["landmarks"] = np.array(rows["landmarks"], dtype=np.float32)
    batch["align_mat"] = np.array(rows["align_mat"], dtype=np.float64)
    batch["mask"] = training_masks(batch)
    plain = dataclasses.replace(cfg.augment, random_warp=False, rotation=0.0, scale=0.0, shift=0.0,
                                random_hsv_power=0.0, ct_mode="none")
    return make_batch(batch, cfg.model.resolution, cfg.model.face_type, plain, np.random.default_rng(seed), False)


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """``count`` (at most ``n``) evenly spaced indices of ``range(n)``, first and last included."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int)) if n else np.zeros(0, int)


def fixed_samples(uri: str, cfg: TrainConfig, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` evenly spaced faces as un-augmented training samples (previews, colour references)."""
    table = read_faces(uri, columns=SAMPLE_COLUMNS)
    return plain_samples(table, evenly_spaced(table.num_rows, count), cfg, seed)


def heldout_samples(uri: str, cfg: TrainConfig, count: int = HELDOUT_MAX) -> dict[str, np.ndarray]:
    """Up to ``count`` evenly spaced held-out src faces (``cfg.holdout``), un-augmented, for the SSIM check.

    Returns:
        ``target`` (N×3×R×R) and ``target_mask`` (N×1×R×R) float32; N is 0 when nothing is held out.
    """
    table = read_faces(uri, columns=SAMPLE_COLUMNS + KEY_COLUMNS)
    cuts, _ = holdout_cuts(np.asarray(table.column("video_id").to_pylist(), dtype=object),
                           table.column("frame_index").to_numpy(), cfg.holdout)
    held = np.flatnonzero([is_heldout(v, f, cuts) for v, f in zip(table.column("video_id").to_pylist(),
                                                                     table.column("frame_index").to_pylist())])
    return plain_samples(table.select(SAMPLE_COLUMNS), held[evenly_spaced(len(held), count)], cfg, 0)


def ct_references(dst: FacesetInfo, cfg: TrainConfig) -> np.ndarray | None:
    """dst training crops (uint8 RGB) for ``ct_mode``, or None when colour transfer is off."""
    if cfg.augment.ct_mode == "none":
        return None
    target = fixed_samples(dst.uri, cfg, CT_REFERENCES)["target"]
    return np.ascontiguousarray((target.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8))

