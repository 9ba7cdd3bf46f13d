"""Several Ray nodes on one machine (``ray.cluster_utils.Cluster``: a raylet each, real nodes with their own
resources), and one of them lost mid-job.

The head has no CPUs, as KubeRay heads usually do, so every task and actor runs on a worker node. The
reference runs have one worker node; the multi-node runs three nodes of one CPU each, so a pool of three
actors of one CPU has one actor per node. A node is removed (its raylet and every worker process on it
killed, as when a pod is evicted) once the job has done some of its work; the job must finish with every
video present exactly once and the same rows as the reference.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dflray.config import ExtractConfig, load_config
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

    def kill_when(self, ready, label: str) -> threading.Thread:
        """Starts a thread that removes the busiest worker node, hard, once ``ready()`` is true;
        ``self.killed`` then holds its node id (None if ``ready`` never came true within two minutes)."""
        self.killed = None

        def run():
            deadline = time.monotonic() + 120
            while not ready() and time.monotonic() < deadline:
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                return
            victim = self.busiest()
            self.cluster.remove_node(victim, allow_graceful=False)
            self.workers.remove(victim)
            self.killed = victim.node_id

        t = threading.Thread(target=run, name=f"kill-node-{label}", daemon=True)
        t.start()
        return t


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
    t = nodes.kill_when(lambda: any(out.glob("_staging/*/faces/*")), "extract")
    s = run_extract(clips, str(out), load_config(ExtractConfig, overrides=[*EXTRACT, "landmarks.concurrency=3"]))
    t.join()
    assert nodes.killed is not None, "the job ended before a node could be removed"
    assert s.by_status == {"ok": 2}
    got = _faces(str(out))
    assert len(set(_keys(got))) == got.num_rows
    assert got.equals(_faces(reference)), "losing a node lost or changed rows"
    videos = pq.read_table(next(out.glob("videos/*.parquet"))).to_pylist()
    assert sum(v["frames_decoded"] for v in videos) == 2 * 36
