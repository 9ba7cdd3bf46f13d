"""``dflray xseg apply``: a trained XSeg model's mask of every face, into the faceset's ``xseg`` column.

One Ray Data row per committed faces file goes to a pool of actors that hold the model; each decodes the
file's crops, predicts their masks at the crop size, and rewrites the file (``xseg`` = PNG of the mask,
``xseg_model`` = the model's id) under a temporary name then its own. A file whose rows already carry
this model's id is left alone, so applying twice changes nothing, and a killed run is finished by a rerun.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from dflray.artifacts.xseg import load_xseg, resolve_xseg
from dflray.config import XSegApplyConfig

log = logging.getLogger("dflray.xseg")


@dataclass
class XSegApplySummary:
    faceset: str
    model_id: str
    files: int = 0
    skipped: int = 0
    faces: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.faces / self.seconds if self.seconds else 0.0
        return (f"xseg apply → {self.faceset}: model {self.model_id[:12]}, {self.files} files rewritten "
                f"({self.skipped} already done), {self.faces} masks, {self.seconds:.1f} s, {rate:.1f} masks/s")


def masks_for(model, images: list[bytes], batch_size: int, threshold: float = 0.0) -> list[bytes]:
    """PNG masks (crop size, 0..255) of encoded face crops."""
    from dflray.models.xseg import predict_mask

    crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in images]
    out: list[tuple[int, bytes]] = []
    for size in sorted({c.shape[0] for c in crops}):  # one model call per crop size
        idx = [i for i, c in enumerate(crops) if c.shape[0] == size]
        masks = predict_mask(model, np.stack([crops[i] for i in idx]), batch_size=batch_size)
        for i, m in zip(idx, masks.reshape(len(idx), size, size)):
            m = (m >= threshold).astype(np.float32) if threshold > 0 else m
            out.append((i, cv2.imencode(".png", np.clip(np.rint(m * 255), 0, 255).astype(np.uint8))[1].tobytes()))
    return [b for _, b in sorted(out, key=lambda t: t[0])]


class ApplyStage:
    """Ray Data actor: rewrites faces files with the XSeg column filled."""

    def __init__(self, faceset: str, model_uri: str, model_sha: str, cfg: XSegApplyConfig):
        import torch

        self.faceset, self.model_sha, self.cfg = faceset, model_sha, cfg
        device = "cuda" if cfg.num_gpus and torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, int(np.ceil(cfg.num_cpus))))
        self.model = load_xseg(model_uri, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"file": [], "status": [], "faces": [], "seconds": []}
        for path in batch["file"]:
            t0 = time.perf_counter()
            status, n = self._one(str(path))
            out["file"].append(str(path))
            out["status"].append(status)
            out["faces"].append(n)
            out["seconds"].append(time.perf_counter() - t0)
        return {k: np.array(v) for k, v in out.items()}

    def _one(self, path: str) -> tuple[str, int]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from dflray.io import schema
        from dflray.io.storage import arrow_filesystem

        fs, _ = arrow_filesystem(self.faceset)
        table = schema.conform("faces", pq.read_table(path, filesystem=fs))
        if table.num_rows and set(table.column("xseg_model").to_pylist()) == {self.model_sha}:
            return "skipped", 0
        masks = masks_for(self.model, table.column("image").to_pylist(), self.cfg.batch_size, self.cfg.threshold)
        table = table.set_column(table.column_names.index("xseg"), "xseg", pa.array(masks, pa.binary()))
        table = table.set_column(table.column_names.index("xseg_model"), "xseg_model",
                                 pa.array([self.model_sha] * table.num_rows, pa.string()))
        tmp = path.rsplit("/", 1)
        tmp_path = f"{tmp[0]}/.tmp-{time.time_ns()}-{tmp[1]}" if len(tmp) == 2 else f".tmp-{time.time_ns()}-{path}"
        pq.write_table(table.cast(schema.with_version(schema.FACES)), tmp_path, filesystem=fs)
        fs.move(tmp_path, path)  # a rename on local disks; copy + delete on object stores
        return "ok", table.num_rows


def run_xseg_apply(faceset: str, model: str, cfg: XSegApplyConfig, address: str | None = None) -> XSegApplySummary:
    """Writes the XSeg model's mask of every face of ``faceset`` into its ``xseg`` column.

    Args:
        faceset: the faceset (any fsspec URL); its files are rewritten in place, one at a time.
        model: ``xseg.pt`` written by ``dflray xseg train`` (or its output folder).
        cfg: actors and batch size.
        address: Ray address (None: RAY_ADDRESS, or a local cluster).

    Raises:
        ValueError: for a faceset or model that cannot be used, before any file is touched.
    """
    import os

    import ray
    from ray.data import ActorPoolStrategy

    from dflray.faceset import committed_face_files
    from dflray.io.storage import exists, join
    from dflray.runtime import init_ray

    t0 = time.perf_counter()
    faceset = faceset if "://" in faceset else os.path.abspath(faceset)
    if not exists(join(faceset, "faces")):
        raise ValueError(f"FACESET: {faceset} is not a faceset (no faces/ folder)")
    model, sha = resolve_xseg(model)
    files = committed_face_files(faceset)
    summary = XSegApplySummary(faceset=faceset, model_id=sha)
    if not files:
        return summary
    init_ray(address)
    n = cfg.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.num_cpus))
    ds = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files)).map_batches(
        ApplyStage, batch_size=1, compute=ActorPoolStrategy(size=min(n, len(files))), num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus or None,
        fn_constructor_kwargs={"faceset": faceset, "model_uri": model, "model_sha": sha, "cfg": cfg})
    for row in ds.iter_rows():
        status = str(row["status"])
        summary.by_status[status] = summary.by_status.get(status, 0) + 1
        summary.faces += int(row["faces"])
    summary.files = summary.by_status.get("ok", 0)
    summary.skipped = summary.by_status.get("skipped", 0)
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary
