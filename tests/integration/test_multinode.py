"""Several Ray nodes on one machine (``ray.cluster_utils.Cluster``: a raylet each, real nodes with their own
resources), and one of them lost mid-job.

The head has no CPUs, as KubeRay heads usually do, so every task and actor runs on a worker node. The
reference runs have one worker node; the multi-node runs three nodes of one CPU each, so a pool of three
actors of one CPU has one actor per node. A node is removed (its raylet and every worker process on it
killed, as when a pod is evicted) once the job has done some of its work; the job must finish with every
video present exactly once and the same rows as the reference.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from dflray.config import ExtractConfig, MergeConfig, TrainConfig, load_config
from dflray.dataset.stages.base import Task, TaskActor, TaskResult
from dflray.faceset import read_tables

# Small segments, so a job has many units of work and one can be lost while others are done.
EXTRACT = ["align.size=64", "landmarks.embedding=false", "decode.segment_frames=6", "decode.max_frames=36",
           "landmarks.num_cpus=1", "landmarks.batch_size=4", "commit_every=64"]


class Nodes:
    """The test cluster: a CPU-less head plus worker nodes added and removed as tests need."""

    def __init__(self):
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        self.workers: list = []

    def resize(self, cpus: list[int]) -> None:
        """Replaces the worker nodes by fresh ones with ``cpus`` CPUs each."""
        for node in self.workers:
            self.cluster.remove_node(node)
        self.workers = [self.cluster.add_node(num_cpus=n) for n in cpus]
        self.cluster.wait_for_nodes()
        import ray

        deadline = time.monotonic() + 60
        while ray.cluster_resources().get("CPU", 0) != sum(cpus) and time.monotonic() < deadline:
            time.sleep(0.5)

    def ids(self) -> set[str]:
        return {n.node_id for n in self.workers}

    def busiest(self):
        """The worker node that hosts the most live actors (the one whose loss costs the most)."""
        from ray._private import state  # the GCS actor table; the state API would need the dashboard

        count = {n.node_id: 0 for n in self.workers}
        for a in state.actors().values():
            node = (a.get("Address") or {}).get("NodeID")
            if a.get("State") == "ALIVE" and node in count:
                count[node] += 1
        top = max(count, key=lambda k: count[k])
        return next(n for n in self.workers if n.node_id == top)

    def actor_nodes(self, class_part: str) -> set[str]:
        """Node ids of the live actors whose class name contains ``class_part``."""
        from ray._private import state

        return {(a.get("Address") or {}).get("NodeID") for a in state.actors().values()
                if a.get("State") == "ALIVE" and class_part in (a.get("ActorClassName") or "")}

    def run_losing_a_node(self, job, ready, replace: int = 0, victim=None, timeout: float = 300):
        """Runs ``job()`` in a thread; once ``ready()`` is true removes a worker node, hard (``victim()``, or
        the busiest), then adds a fresh node of ``replace`` CPUs if asked (as KubeRay replaces a lost pod).
        Node changes stay on this (the main) thread: Ray starts nodes with signal handlers. Returns the
        job's result and the removed node's id (None if ``ready`` never came true before the job ended or
        within ``timeout`` seconds)."""
        box: dict = {}

        def run():
            try:
                box["result"] = job()
            except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
                box["error"] = e

        t = threading.Thread(target=run, name="job", daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        while t.is_alive() and not ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = None
        if t.is_alive() and time.monotonic() < deadline:
            node = victim() if victim else self.busiest()
            self.cluster.remove_node(node, allow_graceful=False)
            self.workers.remove(node)
            killed = node.node_id
            if replace:
                time.sleep(3)
                self.workers.append(self.cluster.add_node(num_cpus=replace))
        t.join(timeout=900)
        assert not t.is_alive(), "the job did not finish within 15 minutes of the node loss"
        if "error" in box:
            raise box["error"]
        return box["result"], killed


@pytest.fixture(scope="module")
def nodes():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray runtime from another module is still up; this module needs its own cluster")
    n = Nodes()
    ray.init(address=n.cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield n
    finally:
        ray.shutdown()
        n.cluster.shutdown()


@pytest.fixture(scope="module")
def clips(sample_clips):
    by = {Path(c).stem: c for c in sample_clips}
    return [by["astronaut"], by["grace_hopper"]]


def _faces(out: str):
    t = read_tables("faces", f"{out}/faces").drop_columns(["schema_version"])
    return t.sort_by([("video_id", "ascending"), ("frame_index", "ascending"), ("face_index", "ascending")])


def _keys(t) -> list[tuple]:
    return list(zip(t.column("video_id").to_pylist(), t.column("frame_index").to_pylist(),
                    t.column("face_index").to_pylist()))


@pytest.fixture(scope="module")
def reference(nodes, clips, tmp_path_factory):
    """Extraction on one worker node of two CPUs."""
    from dflray.extract.pipeline import run_extract

    nodes.resize([2])
    out = str(tmp_path_factory.mktemp("one_node") / "faceset")
    run_extract(clips, out, load_config(ExtractConfig, overrides=[*EXTRACT, "landmarks.concurrency=2"]))
    return out


def test_extraction_spreads_over_nodes_and_matches_one_node(nodes, clips, reference, tmp_path):
    from dflray.extract.pipeline import run_extract

    nodes.resize([1, 1, 1])
    out = str(tmp_path / "faceset")
    s = run_extract(clips, out, load_config(ExtractConfig, overrides=[*EXTRACT, "landmarks.concurrency=3"]))
    assert s.by_status == {"ok": 2}
    videos = read_tables("videos", f"{out}/videos").to_pylist()
    ran_on = {n for v in videos for n in v["nodes"]}
    assert len(ran_on) >= 2 and ran_on <= nodes.ids(), (ran_on, nodes.ids())
    ref, got = _faces(reference), _faces(out)
    assert len(set(_keys(got))) == got.num_rows > 0
    assert got.equals(ref), "three nodes and one node extracted different rows"


def test_extraction_survives_losing_a_worker_node(nodes, clips, reference, tmp_path):
    from dflray.extract.pipeline import run_extract

    nodes.resize([1, 1, 1])
    out = Path(tmp_path / "faceset")
    # Lost once faces are being written: the rest of the segments are in flight or queued.
    cfg = load_config(ExtractConfig, overrides=[*EXTRACT, "landmarks.concurrency=3"])
    s, killed = nodes.run_losing_a_node(lambda: run_extract(clips, str(out), cfg),
                                        lambda: any(out.glob("_staging/*/faces/*")))
    assert killed is not None, "the job ended before a node could be removed"
    assert s.by_status == {"ok": 2}
    got = _faces(str(out))
    assert len(set(_keys(got))) == got.num_rows
    assert got.equals(_faces(reference)), "losing a node lost or changed rows"
    videos = pq.read_table(next(out.glob("videos/*.parquet"))).to_pylist()
    assert sum(v["frames_decoded"] for v in videos) == 2 * 36


# ------------------------------------------------------------------------------ tasks sharing a block


@dataclass(frozen=True)
class _SlowTask(Task):
    folder: str = ""


class _SlowRecorder(TaskActor):
    """0.3 s a task; notes every run under ``runs/`` and writes the task's record (its done-marker) last,
    naming the node and the actor call (the block) that made it."""

    task_type = _SlowTask

    def recorded(self, task: _SlowTask) -> TaskResult | None:
        return TaskResult(task.id, "ok") if os.path.exists(f"{task.folder}/records/{task.id}.json") else None

    def run(self, task: _SlowTask) -> TaskResult:
        ctx = ray.get_runtime_context()
        Path(task.folder, "runs", f"{task.id}.{uuid.uuid4().hex}").touch()
        time.sleep(0.3)
        tmp = Path(task.folder, "records", f".{task.id}.tmp")
        tmp.write_text(json.dumps({"id": task.id, "node": ctx.get_node_id(), "call": ctx.get_task_id()}))
        os.replace(tmp, Path(task.folder, "records", f"{task.id}.json"))
        return TaskResult(task.id, "ok")


def test_tasks_sharing_a_block_survive_losing_a_node(nodes, tmp_path, monkeypatch):
    """``run_tasks`` (the dataset job's merge, quality and publish stages, export, evaluate) sends many tasks
    in one block once a stage has more than 16 per actor. The node running a block is lost after three of
    its tasks are done: the block is sent again, its done tasks are answered from their records
    (``TaskActor.recorded``) and not run again, and every task has one result."""
    import dflray.runtime
    from dflray.dataset.stages.base import run_tasks

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    monkeypatch.setattr(dflray.runtime, "BLOCKS_PER_ACTOR", 1)  # three actors: three blocks of ten tasks
    nodes.resize([1, 1, 1])
    (tmp_path / "runs").mkdir()
    (tmp_path / "records").mkdir()
    tasks = [_SlowTask(id=f"t{i:02d}", folder=str(tmp_path)) for i in range(30)]
    lost: dict[str, list] = {}

    def records() -> list[dict]:
        return [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]

    def mid_block() -> bool:
        calls = Counter(r["call"] for r in records())
        call = next((c for c, k in calls.items() if k >= 3), None)
        if call is not None:
            lost["done"] = [r for r in records() if r["call"] == call]
        return call is not None

    def its_node():
        return next(n for n in nodes.workers if n.node_id == lost["done"][0]["node"])

    results, killed = nodes.run_losing_a_node(lambda: run_tasks(_SlowRecorder, tasks, 1.0, {}), mid_block,
                                              replace=1, victim=its_node)
    assert killed == lost["done"][0]["node"], "the job ended before a node could be removed"
    assert sorted(r.id for r in results) == [t.id for t in tasks]
    assert {r.status for r in results} == {"ok"}
    runs = Counter(p.name.split(".")[0] for p in (tmp_path / "runs").iterdir())
    assert set(runs) == {t.id for t in tasks}
    # Only the task in flight on the lost node may have run twice; the block's done tasks kept their records.
    assert sum(runs.values()) <= len(tasks) + 1, sorted(k for k, v in runs.items() if v > 1)
    for r in lost["done"]:
        assert runs[r["id"]] == 1 and json.loads((tmp_path / "records" / f"{r['id']}.json").read_text()) == r


# ------------------------------------------------------------------------------ training


TRAIN = ["model.resolution=64", "model.ae_dims=64", "model.e_dims=16", "model.d_dims=16", "model.d_mask_dims=8",
         "model.face_type=whole_face", "batch_size=4", "preview_every=0", "log_every=2", "augment_cpus=0.5",
         "num_workers=2", "cpus_per_worker=1", "steps=16", "checkpoint_every=4", "max_failures=2",
         "keep_checkpoints=5", "deterministic=true"]


@pytest.fixture(scope="module")
def trained(nodes, reference, tmp_path_factory):
    """Two training workers (one CPU each) on three one-CPU nodes, so on two nodes; the busiest node is
    lost once checkpoint 8 is on storage, and a fresh node joins a moment later. Before that, the same
    deterministic run goes uninterrupted on the same nodes: the reference for the resumed run's result."""
    from dflray.artifacts.checkpoint import latest_checkpoint
    from dflray.artifacts.export import export_model
    from dflray.cli import _expand_arch
    from dflray.train import run_train

    nodes.resize([1, 1, 1])
    root = tmp_path_factory.mktemp("train")
    out = root / "run_out"
    seen: dict[str, set] = {}

    def ready():
        seen["workers"] = nodes.actor_nodes("RayTrainWorker")
        return (out / "run" / "checkpoint_00000008" / "meta.json").exists()

    def a_training_node():
        return next(n for n in nodes.workers if n.node_id in seen["workers"])

    cfg = load_config(TrainConfig, overrides=_expand_arch(TRAIN, "liae-ud"))
    whole = root / "uninterrupted"
    run_train(reference, reference, str(whole), cfg)
    summary, killed = nodes.run_losing_a_node(lambda: run_train(reference, reference, str(out), cfg), ready,
                                              replace=2, victim=a_training_node)
    model = str(root / "model.ts")
    export_model(latest_checkpoint(str(out)), model)
    return {"summary": summary, "out": out, "model": model, "killed": killed, "workers": seen["workers"],
            "uninterrupted": whole}


def test_training_on_two_nodes_resumes_after_losing_one(trained):
    from dflray.artifacts.checkpoint import latest_checkpoint, load_payload

    assert trained["killed"] is not None, "training ended before a node could be removed"
    assert len(trained["workers"]) == 2, f"the two training workers ran on {trained['workers']}"
    summary = trained["summary"]
    assert summary.steps == 16
    # Checkpoint 8 was on storage when the node went; Ray Train registers a checkpoint a moment after its
    # upload, so the restart comes from 8, or from 4 if the node went in that moment: at most one interval.
    resumed = summary.metrics["resumed_from"]
    assert resumed in (4, 8)
    # The restarted worker group began from exactly that checkpoint's parameters (the loop's checksum of
    # its parameters at the start of the attempt that finished).
    ckpt = trained["out"] / "run" / f"checkpoint_{resumed:08d}"
    assert summary.metrics["start_checksum"] == _checksum(load_payload(str(ckpt))["model"])
    final = load_payload(latest_checkpoint(str(trained["out"])))
    assert list(final["history"].numpy()[:, 0]) == list(range(1, 17))
    # With deterministic=true the resumed run ends with the parameters (and losses) of the same run done
    # without a failure: nothing of the lost steps leaked into the result, nothing was trained twice.
    whole = load_payload(latest_checkpoint(str(trained["uninterrupted"])))
    assert _checksum(final["model"]) == _checksum(whole["model"])
    np.testing.assert_array_equal(final["history"].numpy(), whole["history"].numpy())


def _checksum(state) -> str:
    """``dflray.train.step.param_checksum`` of a saved state dict (same names, same bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ merge


# One predictor actor (shared, restartable) and merge workers of half a CPU: after a lost node both fit on
# the nodes left. One torch thread and lossless output: the same bytes wherever a video is merged.
MERGE = ["output.lossless=true", "predict.threads=1", "predict.num_cpus=0.5", "workers.num_cpus=0.5",
         "dataset_id=multinode"]


def _merged(out: str):
    t = pq.read_table(f"{out}/index.parquet")
    return {r["dst_video_id"]: r for r in t.to_pylist()}


@pytest.fixture(scope="module")
def merged_one_node(nodes, trained, reference, tmp_path_factory):
    from dflray.merge.pipeline import run_merge

    nodes.resize([2])
    out = str(tmp_path_factory.mktemp("merge_one") / "out")
    run_merge(trained["model"], [reference], out, load_config(MergeConfig, overrides=[*MERGE, "workers.concurrency=2"]))
    return out


def test_merge_spreads_over_nodes_and_matches_one_node(nodes, trained, reference, merged_one_node, tmp_path):
    from dflray.merge.pipeline import run_merge

    nodes.resize([1, 1, 1])
    out = str(tmp_path / "out")
    s = run_merge(trained["model"], [reference], out, load_config(MergeConfig, overrides=[*MERGE, "workers.concurrency=3"]))
    assert s.by_status == {"ok": 2}
    got, ref = _merged(out), _merged(merged_one_node)
    assert {r["node"] for r in got.values()} <= nodes.ids()
    assert set(got) == set(ref) and len(got) == 2
    for vid, r in got.items():  # lossless output, one torch thread: the same bytes wherever it ran
        assert (r["sha256"], r["mask_sha256"], r["frames"]) == (ref[vid]["sha256"], ref[vid]["mask_sha256"],
                                                               ref[vid]["frames"])


def test_merge_survives_losing_a_worker_node(nodes, trained, reference, merged_one_node, tmp_path):
    from dflray.merge.pipeline import run_merge

    nodes.resize([1, 1, 1])
    out = Path(tmp_path / "out")
    # Lost while videos are being merged: a merge worker encodes into a local folder of its own
    # (``dflray-merge-*`` in the temp dir) before the video moves in.
    cfg = load_config(MergeConfig, overrides=[*MERGE, "workers.concurrency=3"])
    t0 = time.time()

    def merging():
        for p in Path(tempfile.gettempdir()).glob("dflray-merge-*/*.mp4"):
            try:
                if p.stat().st_mtime >= t0:
                    return True
            except FileNotFoundError:  # moved in meanwhile
                continue
        return False

    def the_predictors_node():  # the harder loss: the model every worker calls goes with it
        where = nodes.actor_nodes("_PredictActor")
        return next((n for n in nodes.workers if n.node_id in where), nodes.busiest())

    s, killed = nodes.run_losing_a_node(lambda: run_merge(trained["model"], [reference], str(out), cfg), merging,
                                        victim=the_predictors_node)
    assert killed is not None, "the merge ended before a node could be removed"
    assert s.by_status == {"ok": 2}
    got, ref = _merged(str(out)), _merged(merged_one_node)
    assert set(got) == set(ref)
    for vid, r in got.items():
        assert r["sha256"] == ref[vid]["sha256"]
    assert len(list(out.glob("videos/*.mp4"))) == 2


# ------------------------------------------------------------------------------ the dataset job


# Training-free methods, so the fakes depend only on the plan's seed: the dataset is the same bytes however
# the work was spread. Extraction in small segments on one landmark actor per node.
SPREAD_PLAN = ["methods=[{name: landmark-warp, fakes_per_video: 1}, {name: sbi, fakes_per_video: 1}]",
               "quality.gates=[]", "extract.decode.segment_frames=6", "extract.landmarks.num_cpus=1",
               "merge.workers.num_cpus=0.5", "perturb.compression=[c0, c23]", "perturb.fraction=1.0"]


def _generate_on(nodes, cpus: list[int], clips: list[str], out: Path, concurrency: int):
    from dflray.dataset.pipeline import run_generate
    from tests.integration.conftest import generated_plan

    nodes.resize(cpus)
    cfg = generated_plan(clips, *SPREAD_PLAN, f"extract.landmarks.concurrency={concurrency}",
                         f"merge.workers.concurrency={concurrency}")
    return run_generate(cfg, str(out), report=False)


def test_dataset_job_spreads_over_nodes_and_matches_one_node(nodes, tmp_path, monkeypatch):
    """``dflray generate`` with two training-free methods (landmark-warp and sbi, every video faked by
    each) on one two-CPU node and on three one-CPU nodes: the work spreads over the nodes, and the two
    datasets are the same, row for row and byte for byte (the published videos' and masks' sha256, the
    quality figures). The three-node run merges, measures and publishes in windows of three tasks, as a large
    dataset does (``TASKS_PER_ACTOR``: one task per actor), and in blocks of several tasks (one block per actor)."""
    import dflray.runtime
    from dflray.dataset.stages import base
    from dflray.faceset import read_tables
    from dflray.sample import make_sample

    clips = make_sample(str(tmp_path / "clips"), seconds=1.0, size=192)
    one, three = tmp_path / "one", tmp_path / "three"
    s1 = _generate_on(nodes, [2], clips, one, 2)
    monkeypatch.setattr(base, "TASKS_PER_ACTOR", 1)
    monkeypatch.setattr(dflray.runtime, "BLOCKS_PER_ACTOR", 1)
    s3 = _generate_on(nodes, [1, 1, 1], clips, three, 3)
    for s in (s1, s3):
        assert s.failures == [] and s.merged == {"ok": 4} and s.fakes_planned == 4, (s.failures, s.merged)
    ran_on = {n for v in read_tables("videos", f"{three}.work/faceset/videos").to_pylist() for n in v["nodes"]}
    ran_on |= {r["node"] for r in read_tables("merged", f"{three}.work/fakes/records").to_pylist()}
    assert len(ran_on) >= 2 and ran_on <= nodes.ids(), (ran_on, nodes.ids())
    drop = ["run_id"]  # the one column a run sets for itself

    def rows(out: Path):
        t = pq.read_table(out / "index.parquet").drop_columns(drop)
        return sorted(t.to_pylist(), key=lambda r: (r["video_id"], r["compression"]))

    ref, got = rows(one), rows(three)
    assert len(got) == len(ref) == 2 * (2 + 4), len(got)  # two levels of (two reals + four fakes)
    assert {r["method"] for r in got if r["label"] == "FAKE"} == {"dflray-landmark-warp", "dflray-sbi"}
    assert all(r["status"] == "ok" and r["sha256"] for r in got)
    for a, b in zip(got, ref):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    for name in ("plan.parquet", "frames.parquet"):
        assert pq.read_table(three / name).equals(pq.read_table(one / name)), name


def test_dataset_job_survives_losing_a_worker_node(nodes, tmp_path):
    """``dflray generate`` over two people on three nodes; the node running a model's training is lost once
    that model has a checkpoint, and a fresh node joins (as KubeRay replaces a pod). The job finishes in
    the same run: every planned video published exactly once."""
    from dflray.dataset.pipeline import run_generate
    from dflray.sample import make_sample
    from tests.integration.conftest import TINY_GENERATE, generated_plan

    nodes.resize([1, 1, 1])
    clips = make_sample(str(tmp_path / "clips"), seconds=1.0, size=192)
    cfg = generated_plan(clips, "models.train.steps=8", "models.train.checkpoint_every=2", "models.concurrency=1",
                         "models.train.cpus_per_worker=1", "quality.gates=[]")
    assert "models.train.steps=6" in TINY_GENERATE  # the plan's tiny defaults, overridden above
    out = tmp_path / "ds"
    work = Path(f"{out}.work")
    seen: dict[str, set] = {}

    def ready():
        seen["train"] = nodes.actor_nodes("RayTrainWorker")
        return bool(seen["train"]) and any(work.glob("models/*/train/run/checkpoint_*/meta.json"))

    def a_training_node():
        return next(n for n in nodes.workers if n.node_id in seen["train"])

    summary, killed = nodes.run_losing_a_node(lambda: run_generate(cfg, str(out), report=False), ready,
                                              replace=1, victim=a_training_node)
    assert killed is not None, "the job ended before a node could be removed"
    assert summary.models_failed == 0 and summary.failures == [], summary.failures
    assert summary.merged == {"ok": summary.fakes_planned} and summary.fakes_planned == 2
    index = pq.read_table(out / "index.parquet").to_pylist()
    plan = pq.read_table(out / "plan.parquet").to_pylist()
    published = [(r["video_id"], r["compression"]) for r in index]
    assert len(published) == len(set(published))
    assert {r["item_id"] for r in plan} == {r["item_id"] for r in index}
    assert all((out / r["path"]).is_file() for r in index)
