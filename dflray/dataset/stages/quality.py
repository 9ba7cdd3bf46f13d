"""Stage 5, quality: swap success (the headline), identity, pose, expression, flicker and seam metrics of
every merged fake, measured on its lossless merge against its target video and its source identity.

Each fake is one ``QualityTask`` on a pool of measuring actors (``dflray.quality.FaceMeasurer``); its
result is ``WORK/quality/<item_id>.json`` (its done-marker). The gates are applied when the dataset
is published (``publish.dataset_rows``), from the plan's current ``quality.gates``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from dflray.config import QUALITY_METRICS, GenerateConfig
from dflray.dataset.stages.base import (
    TableRows,
    Task,
    TaskActor,
    TaskResult,
    done_ids,
    read_json,
    run_tasks,
    write_json,
)
from dflray.io import schema
from dflray.io.storage import arrow_filesystem, exists, join, list_files

__all__ = ["QualityDocs", "QualityTask", "measure_fakes"]


@dataclass(frozen=True)
class QualityTask(Task):
    """One merged fake to measure.

    Attributes:
        id: the fake's ``item_id``.
        video_id: its target video's faceset id.
        faceset: the faceset of every video.
        face_files: the faceset's faces files that hold the target video's rows (``face_holders``).
        real_uri: the target video.
        fake_uri: the lossless merged fake.
        mask_uri: its mask video.
        source_embedding: the mean dlib embedding of the source identity (None when it has none).
    """

    video_id: str
    faceset: str
    face_files: list[str]
    real_uri: str
    fake_uri: str
    mask_uri: str
    source_embedding: list[float] | None


class _QualityWorker(TaskActor):
    """Measures fakes against their originals; writes ``WORK/quality/<item>.json`` (the gates are
    applied when the dataset is published, from the plan's current ``quality``)."""

    task_type = QualityTask

    def __init__(self, cfg: GenerateConfig, work: str):
        from dflray.quality import FaceMeasurer

        self.cfg, self.work = cfg, work
        self.measurer = FaceMeasurer()

    def recorded(self, task: QualityTask) -> TaskResult | None:
        return TaskResult(task.id, "ok") if exists(join(self.work, "quality", f"{task.id}.json")) else None

    def run(self, task: QualityTask) -> TaskResult:
        import pyarrow.dataset as pads

        fs, _ = arrow_filesystem(task.faceset)
        faces = pads.dataset(task.face_files, filesystem=fs, format="parquet").to_table(
            filter=pads.field("video_id") == task.video_id)
        faces = schema.conform("faces", faces) if faces.num_rows else faces
        try:
            metrics = self.measurer.measure_fake(task.fake_uri, task.real_uri, task.mask_uri, faces,
                                                 np.asarray(task.source_embedding, np.float64),
                                                 sample_frames=self.cfg.quality.sample_frames)
            note = ""
        except Exception as e:  # noqa: BLE001 - an unmeasurable fake gets null metrics, and says why
            metrics = {m: None for m in QUALITY_METRICS}
            note = f"not measured: {type(e).__name__}: {e}"
        doc = {"id": task.id, "status": "ok", "metrics": metrics, "note": note}
        write_json(join(self.work, "quality", f"{task.id}.json"), doc)
        return TaskResult(task.id, "ok")


class QualityDocs(Mapping[str, dict]):
    """item_id → a fake's quality document (``id``, ``metrics``, ``note``), held as one Arrow table of the
    documents (their metrics as JSON) and read as a dict when asked for: a few hundred bytes a fake in the
    driver, not a dict of dicts."""

    def __init__(self, docs: Iterable[dict[str, Any]] = ()):
        import pyarrow as pa

        cols: dict[str, list[str]] = {"id": [], "note": [], "metrics": []}
        for d in docs:  # columns of strings as the documents come: no list of the documents themselves
            cols["id"].append(d["id"])
            cols["note"].append(d.get("note") or "")
            cols["metrics"].append(json.dumps(d.get("metrics")))
        self._rows = TableRows(pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()}), "id")

    @classmethod
    def read(cls, folder: str) -> "QualityDocs":
        """The documents of every ``<item_id>.json`` under ``folder``."""
        return cls(read_json(u) for u in list_files(folder, ".json"))

    def __getitem__(self, key: str) -> dict:
        row = self._rows[key]
        return {"id": row["id"], "metrics": json.loads(row["metrics"]), "note": row["note"]}

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _quality_tasks(plan: Iterable[dict], merged: Mapping[str, dict], faceset: str, holders: Mapping[str, list[str]],
                   work: str, identity_embeddings: Mapping[str, list[float]]) -> Iterator[QualityTask]:
    """A task per merged fake not yet measured, in plan order, as the plan's rows come."""
    have = done_ids(join(work, "quality"), ".json")
    fakes_out = join(work, "fakes")
    for r in plan:
        if r["kind"] != "FAKE" or r["item_id"] in have:
            continue
        rec = merged.get(r["item_id"])
        if rec is None or rec["status"] != "ok":
            continue
        yield QualityTask(id=r["item_id"], video_id=r["video_id"], faceset=faceset,
                          face_files=list(holders.get(r["video_id"], [])), real_uri=r["uri"],
                          fake_uri=join(fakes_out, rec["path"]), mask_uri=join(fakes_out, rec["mask_path"]),
                          source_embedding=identity_embeddings.get(r["source_identity"]))


def measure_fakes(cfg: GenerateConfig, plan: Iterable[dict], merged: Mapping[str, dict], faceset: str,
                  holders: Mapping[str, list[str]], work: str,
                  identity_embeddings: Mapping[str, list[float]]) -> QualityDocs:
    """Measures every merged fake not yet measured.

    Returns:
        item_id → its quality document (``metrics``, and a ``note`` when it could not be measured) of
        every fake measured so far, this run or an earlier one.
    """
    run_tasks(_QualityWorker, _quality_tasks(plan, merged, faceset, holders, work, identity_embeddings), 1.0,
              {"cfg": cfg, "work": work})
    return QualityDocs.read(join(work, "quality"))
