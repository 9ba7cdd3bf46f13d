"""``dflray export-dataset --format deepfakebench``: a generated dataset as DeepfakeBench reads it, unpatched.

DeepfakeBench (SCLBD/DeepfakeBench) trains and tests detectors on face crops listed in one JSON per
dataset. This writes, for one compression level of any generated dataset (any layout)::

    OUT/<name>.json                 the dataset JSON (below)
    OUT/<name>-<method>.json        with several forgery methods: the reals and one method's fakes each
    OUT/label_dict.yaml             the label keys to add to DeepfakeBench's label_dict
    OUT/deepfakebench.yaml          the config keys to paste (image files, not LMDB; train/test dataset…)
    OUT/frames/<video_id>/<i>.png   aligned RGB face crops (``size``², frame i of the published video)
    OUT/masks/<video_id>/<i>.png    grey manipulation masks in the crop (0/255; all 0 for a real video)
    OUT/landmarks/<video_id>/<i>.npy  (81, 2) float32 landmarks in crop pixels
    OUT/export.json  OUT/records/<video_id>.json  OUT/errors.json   what was exported, per video, and failures

The crops are ``dflray.dataset.crops.video_crops`` (DeepfakeBench's five-point alignment at scale 1.3,
``frames`` evenly spaced frames per video; see ``dflray.face.dfb_align``). DeepfakeBench definitions
followed here, from its ``preprocessing/rearrange.py`` and ``training/dataset/abstract_dataset.py``:

- the JSON is ``{name: {label_key: {"train"|"val"|"test": {video: {"label": label_key, "frames": [path,
  …]}}}}}``; every label key carries all three splits (its loader indexes the one it runs on); the
  label keys are ``<name>_real`` (0) and ``<name>_fake`` (1), which its ``label_dict`` must hold;
- a path that starts with ``.`` is opened as it is, relative to DeepfakeBench's working directory (its
  repository root); any other is prefixed with ``rgb_dir`` and a backslash, so every path here starts
  with ``root`` (default ``./datasets/rgb/<name>``, where its README keeps image datasets);
- a frame's mask and landmarks are found by ``path.replace('frames', 'masks')`` and
  ``.replace('frames', 'landmarks').replace('.png', '.npy')`` over the whole path, so ``frames`` and
  ``.png`` appear nowhere else in it (checked: ``name``, ``root`` and the video ids);
- frames are sorted by ``int`` of the file name's stem: files are named by their frame number, zero-padded
  to 3 digits as ``preprocess.py`` names them;
- masks are binary, as ``preprocess.py`` stores them (``> 1`` → 255 after warping);
- compression is nested in the JSON only for FaceForensics++ names, which an export may not take; one
  compression level per export (``c23`` by default, as DeepfakeBench's protocol).

Where it differs: frames are spaced over the frames that have the face, not over all frames (so a
video gives ``frames`` crops whenever it has that many faces); the landmarks are the faceset's 68 moved
into the crop plus 13 estimated forehead points, not an 81-point model re-run on the crop (see
``dflray.face.dfb_align``); a fake's crops are its swapped frames only.

One Ray task per video (``run_tasks``); a video that fails is an entry of ``errors.json``, never a dead
export. A video is done when its record exists (written last), so a rerun exports only what is missing,
and every file is a deterministic function of the dataset and the options: a rerun writes identical
bytes.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dflray.config import COMPRESSION_LEVELS, ConfigError, ExportConfig
from dflray.config.export import check_dfb_name, check_dfb_root
from dflray.dataset.crops import video_crops
from dflray.dataset.stages.base import Task, TaskActor, TaskResult, done_ids, read_json, run_tasks, work_of
from dflray.face.dfb_align import dfb_binary_mask
from dflray.faceset import check_writable
from dflray.io.storage import arrow_filesystem, atomic_write, exists, join, normalize_uri

log = logging.getLogger("dflray.export")

__all__ = ["ExportSummary", "ExportTask", "ExportWorker", "choose_compression", "dataset_json", "label_keys",
           "method_datasets", "run_export"]

LABEL_VALUES = {"real": 0, "fake": 1}


@dataclass
class ExportSummary:
    """What an ``export-dataset`` run did."""

    out: str
    name: str = ""
    compression: str = ""
    videos: int = 0
    exported: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"export-dataset → {self.out}: DeepfakeBench dataset {self.name} ({self.compression}), "
                 f"{self.videos} videos: {self.exported} exported, {self.skipped} already there, "
                 f"{len(self.failures)} failed; {self.seconds:.1f} s",
                 f"  DeepfakeBench: {join(self.out, self.name + '.json')}, label_dict.yaml, deepfakebench.yaml"]
        lines += [f"  failed: {f}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  … and {len(self.failures) - 20} more (see errors.json)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ one video


@dataclass(frozen=True)
class ExportTask(Task):
    """One published video to export.

    Attributes:
        row: its index row (video_id, path, mask_path, label, split, source_uri).
        label_key: its DeepfakeBench label (``<name>_real`` or ``<name>_fake``).
        root: the export root as DeepfakeBench sees it (the JSON paths' prefix).
    """

    row: dict[str, Any] = field(default_factory=dict)
    label_key: str = ""
    root: str = "."


def _png(image: np.ndarray) -> bytes:
    import cv2

    img = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write(uri: str, data: bytes) -> None:
    with atomic_write(uri) as f:
        f.write(data)


class ExportWorker(TaskActor):
    """Crops one video and writes its frames, masks, landmarks and record (the record last)."""

    task_type = ExportTask

    def __init__(self, dataset: str, out: str, frames: int, size: int):
        self.dataset, self.out, self.frames, self.size = dataset, out, frames, size

    def recorded(self, task: ExportTask) -> TaskResult | None:
        done = exists(join(self.out, "records", f"{task.id}.json"))  # written last
        return TaskResult(task.id, "ok") if done else None

    def run(self, task: ExportTask) -> TaskResult:
        vid = task.row["video_id"]
        for bad in ("frames", ".png", "\\", "/"):
            if bad in vid:  # the JSON's frame paths must keep a single 'frames' (DeepfakeBench rewrites them all)
                raise ValueError(f"video id {vid!r} contains {bad!r}: DeepfakeBench cannot read its frames' masks")
        crops = video_crops(self.dataset, task.row, frames=self.frames, size=self.size)
        fake = task.row["label"] == "FAKE"
        paths = []
        for k, f in enumerate(crops.frame_indices.tolist()):
            stem = f"{f:03d}"
            _write(join(self.out, "frames", vid, f"{stem}.png"), _png(crops.images[k]))
            mask = dfb_binary_mask(crops.masks[k]) if fake else np.zeros_like(crops.masks[k])
            _write(join(self.out, "masks", vid, f"{stem}.png"), _png(mask))
            _write(join(self.out, "landmarks", vid, f"{stem}.npy"), _npy(crops.landmarks[k].astype(np.float32)))
            paths.append(f"{task.root}/frames/{vid}/{stem}.png")
        record = {"video_id": vid, "label": task.label_key, "split": task.row["split"], "frames": paths,
                  "frame_indices": crops.frame_indices.tolist()}
        _write(join(self.out, "records", f"{vid}.json"), _dumps(record))
        return TaskResult(vid, "ok")


# ------------------------------------------------------------------------------ the documents


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def label_keys(name: str) -> dict[str, str]:
    """``{"REAL": "<name>_real", "FAKE": "<name>_fake"}``: the DeepfakeBench labels of an export."""
    return {"REAL": f"{name}_real", "FAKE": f"{name}_fake"}


def dataset_json(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """DeepfakeBench's dataset JSON of the exported videos' records.

    Example:
        >>> dataset_json("ds", [{"video_id": "v", "label": "ds_real", "split": "test", "frames": ["./f/0.png"]}])
        ... # doctest: +NORMALIZE_WHITESPACE
        {'ds': {'ds_real': {'train': {}, 'val': {}, 'test': {'v': {'label': 'ds_real', 'frames': ['./f/0.png']}}},
                'ds_fake': {'train': {}, 'val': {}, 'test': {}}}}
    """
    doc: dict[str, dict[str, dict[str, Any]]] = {key: {s: {} for s in ("train", "val", "test")}
                                                 for key in label_keys(name).values()}
    for r in sorted(records, key=lambda r: r["video_id"]):
        doc[r["label"]][r["split"]][r["video_id"]] = {"label": r["label"], "frames": list(r["frames"])}
    return {name: doc}


def method_datasets(name: str, records: list[dict[str, Any]], method_of: dict[str, str]) -> dict[str, Any]:
    """One DeepfakeBench dataset per forgery method, as DeepfakeBench splits FaceForensics++ (``FF-DF.json``,
    ``FF-F2F.json``…): ``<name>-<method>`` holds every real video (``<name>_real``) and that method's fakes
    under the label ``<name>_<method>``, so that ``test_dataset: [<name>-sbi, …]`` scores a detector per
    method (cross-manipulation tests). Empty when the fakes come from fewer than two methods.

    Args:
        name: the export's dataset name.
        records: the exported videos' records (``label`` ``<name>_real`` or ``<name>_fake``).
        method_of: a fake's video id → its method (the index's ``method``, ``dflray-`` left off).

    Returns:
        ``<name>-<method>`` → its dataset JSON.

    Example:
        >>> recs = [{"video_id": "r", "label": "ds_real", "split": "test", "frames": ["./r/0.png"]},
        ...         {"video_id": "a", "label": "ds_fake", "split": "test", "frames": ["./a/0.png"]},
        ...         {"video_id": "b", "label": "ds_fake", "split": "test", "frames": ["./b/0.png"]}]
        >>> docs = method_datasets("ds", recs, {"a": "sbi", "b": "liae-ud"})
        >>> sorted(docs), sorted(docs["ds-sbi"]["ds-sbi"]), list(docs["ds-sbi"]["ds-sbi"]["ds_sbi"]["test"])
        (['ds-liae-ud', 'ds-sbi'], ['ds_real', 'ds_sbi'], ['a'])
    """
    real = label_keys(name)["REAL"]
    methods = sorted({method_of[r["video_id"]] for r in records if r["label"] != real and r["video_id"] in method_of})
    if len(methods) < 2:
        return {}
    out = {}
    for m in methods:
        key = f"{name}_{m}"
        doc: dict[str, dict[str, dict[str, Any]]] = {k: {s: {} for s in ("train", "val", "test")} for k in (real, key)}
        for r in sorted(records, key=lambda r: r["video_id"]):
            label = real if r["label"] == real else key if method_of.get(r["video_id"]) == m else None
            if label is not None:
                doc[label][r["split"]][r["video_id"]] = {"label": label, "frames": list(r["frames"])}
        out[f"{name}-{m}"] = {f"{name}-{m}": doc}
    return out


def _label_lines(name: str, methods: list[str]) -> str:
    keys = label_keys(name)
    lines = [f"  {keys['REAL']}: {LABEL_VALUES['real']}", f"  {keys['FAKE']}: {LABEL_VALUES['fake']}"]
    lines += [f"  {name}_{m}: {LABEL_VALUES['fake']}  # the {m} fakes in {name}-{m}.json" for m in methods]
    return "\n".join(lines) + "\n"


def _label_dict_yaml(name: str, methods: list[str] = ()) -> str:
    return (f"# DeepfakeBench labels of {name} (dflray export-dataset). Add these entries to label_dict in\n"
            "# training/config/train_config.yaml AND training/config/test_config.yaml (test.py reads only the\n"
            "# latter's; a label_dict in a detector config replaces train_config.yaml's whole label_dict).\n"
            f"label_dict:\n{_label_lines(name, list(methods))}")


def _config_yaml(name: str, root: str, compression: str, frames: int, size: int, dataset_id: str,
                 methods: list[str] = ()) -> str:
    tests = ", ".join([name, *(f"{name}-{m}" for m in methods)])
    per_method = (f"\n# {name}-<method>.json: the reals and one method's fakes each, as DeepfakeBench splits FF++\n"
                  "# (FF-DF, FF-F2F...): train on one and test on the others for cross-manipulation figures.\n"
                  if methods else "")
    return f"""\
# DeepfakeBench settings for {name}: dflray export-dataset of dataset {dataset_id} ({compression},
# {frames} frames per video, {size} px crops). Place this folder at {root} under DeepfakeBench's root
# (or change every path in {name}.json), then run its scripts from that root.
#
# 1. training/config/train_config.yaml and training/config/test_config.yaml: read image files, not LMDB
#    (train.py switches dataset_json_folder to its own when lmdb is true), and find {name}.json here.
#    Every frame path in {name}.json starts with '.', so rgb_dir is not used for them. With other
#    datasets in the same run, copy {name}.json into your dataset_json_folder instead.
lmdb: false
dataset_json_folder: {root}
label_dict:  # add to the label_dict that is there (keep its other entries)
{_label_lines(name, list(methods))}#
# 2. training/config/detector/<detector>.yaml:{per_method}
train_dataset: [{name}]
test_dataset: [{tests}]
compression: {compression}  # not used for {name} (its JSON does not nest compression levels)
frame_num: {{train: {frames}, test: {frames}}}
resolution: {size}
with_mask: false  # masks/ are there: true for detectors that use them
with_landmark: false  # landmarks/ ((81, 2) float32, forehead points estimated): true for those that use them
"""


# ------------------------------------------------------------------------------ the job



def _index_rows(dataset: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    uri = join(dataset, "index.parquet")
    if not exists(uri) or not exists(join(dataset, "generate.json")):
        raise ValueError(f"DATASET {dataset} is not a dataset made by dflray generate (no index.parquet or "
                         "generate.json)")
    fs, path = arrow_filesystem(uri)
    cols = ["video_id", "path", "mask_path", "label", "split", "source_uri", "compression", "status", "dataset_id",
            "method"]
    return pq.read_table(path, filesystem=fs, columns=cols).to_pylist()


def choose_compression(levels: set[str], wanted: str | None) -> str:
    """The level to export: ``wanted``, else ``c23`` when present, else the first (c0, c23, c40 order).

    Raises:
        ConfigError: naming ``compression`` when ``wanted`` is not in the dataset.
    """
    present = [c for c in COMPRESSION_LEVELS if c in levels] + sorted(levels - set(COMPRESSION_LEVELS))
    if not present:
        raise ValueError("the dataset has no published video")
    if wanted is not None:
        if wanted not in levels:
            raise ConfigError("compression", f"the dataset has no {wanted} videos (it has {', '.join(present)})")
        return wanted
    return "c23" if "c23" in levels else present[0]


def _export_key(cfg: ExportConfig, dataset: str, dataset_id: str, name: str, root: str, compression: str) -> dict:
    """What shapes the exported files (not which splits, not resources): a rerun into OUT must match it."""
    return {"kind": "dflray.export", "format": cfg.format, "dataset": dataset, "dataset_id": dataset_id,
            "name": name, "root": root, "compression": compression, "frames": cfg.frames, "size": cfg.size}


def run_export(cfg: ExportConfig, dataset: str, out: str, address: str | None = None) -> ExportSummary:
    """Exports a generated dataset for DeepfakeBench into ``out`` on the current Ray cluster (resumably).

    Args:
        cfg: the validated options.
        dataset: the generated dataset's root (any fsspec URL).
        out: the export folder (any fsspec URL).
        address: Ray address (None: RAY_ADDRESS, or a local cluster).

    Raises:
        ConfigError / ValueError: for bad options, a dataset without what is needed or an ``out`` holding
            another export, before any work.

    Example:
        >>> run_export(ExportConfig(frames=32), "out/dataset", "DeepfakeBench/datasets/rgb/ds")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    dataset, out = normalize_uri(dataset), normalize_uri(out)
    rows = _index_rows(dataset)
    work_of(dataset)  # the faceset's location must be readable before any work
    ok = [r for r in rows if r["status"] == "ok"]
    compression = choose_compression({r["compression"] for r in ok}, cfg.compression)
    dataset_id = read_json(join(dataset, "generate.json")).get("dataset_id") or (ok[0]["dataset_id"] if ok else "")
    name = check_dfb_name(cfg.name or dataset_id, "name" if cfg.name else "name (default: the dataset id; give name=)")
    root = check_dfb_root(cfg.root or f"./datasets/rgb/{name}")
    chosen = sorted((r for r in ok if r["compression"] == compression and r["split"] in cfg.splits),
                    key=lambda r: r["video_id"])
    summary = ExportSummary(out=out, name=name, compression=compression, videos=len(chosen))
    check_writable(out)
    key = _export_key(cfg, dataset, dataset_id, name, root, compression)
    marker = join(out, "export.json")
    if exists(marker):
        if read_json(marker) != key:
            raise ValueError(f"--out {out} holds an export with other settings ({marker}); use a new --out (or the "
                             "same settings to finish it)")
    else:
        _write(marker, _dumps(key))

    labels = label_keys(name)
    done = done_ids(join(out, "records"), ".json")
    todo = [ExportTask(id=r["video_id"], row={k: r[k] for k in ("video_id", "path", "mask_path", "label", "split",
                                                                  "source_uri")},
                       label_key=labels[r["label"]], root=root)
            for r in chosen if r["video_id"] not in done]
    summary.skipped = len(chosen) - len(todo)
    errors: list[dict[str, str]] = []
    if todo:
        from dflray.runtime import init_ray

        init_ray(address)
        for res in run_tasks(ExportWorker, todo, cfg.num_cpus, dict(dataset=dataset, out=out, frames=cfg.frames,
                                                                     size=cfg.size)):
            if res.status == "ok":
                summary.exported += 1
            else:
                errors.append({"video_id": res.id, "error": res.error})
    summary.failures = [f"{e['video_id']}: {e['error']}" for e in sorted(errors, key=lambda e: e["video_id"])]
    wanted = {r["video_id"] for r in chosen}
    records = [read_json(join(out, "records", f"{v}.json")) for v in sorted(wanted & done_ids(join(out, "records"),
                                                                                               ".json"))]
    _write(join(out, f"{name}.json"), _dumps(dataset_json(name, records)))
    method_of = {r["video_id"]: (r.get("method") or "fake").removeprefix("dflray-") for r in chosen
                 if r["label"] == "FAKE"}
    per_method = method_datasets(name, records, method_of)
    for stem, doc in per_method.items():
        check_dfb_name(stem, "name")
        _write(join(out, f"{stem}.json"), _dumps(doc))
    methods = [stem.removeprefix(f"{name}-") for stem in sorted(per_method)]
    _write(join(out, "label_dict.yaml"), _label_dict_yaml(name, methods).encode())
    _write(join(out, "deepfakebench.yaml"), _config_yaml(name, root, compression, cfg.frames, cfg.size,
                                                         dataset_id, methods).encode())
    _write(join(out, "errors.json"), _dumps(sorted(errors, key=lambda e: e["video_id"])))
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary
