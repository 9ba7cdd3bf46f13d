"""What the dataset job's stages share: the run's summary, typed tasks and the actor pool that runs them.

A stage that works per item (merge and quality per fake, perturb per published video) describes each
item as a frozen ``Task`` dataclass; ``run_tasks`` sends the tasks through Ray Data to a pool of
``TaskActor`` actors, one task per call, and returns one ``TaskResult`` per task. A task that raises
becomes an error result, never a dead job.

The tasks are read as they come, ``TASKS_PER_ACTOR`` per actor of the pool at a time, each window one
pipeline and actor pool (the driver holds one window's tasks, never a whole stage's). A window travels in a
bounded number of blocks (``dflray.runtime.input_blocks``: at most 16 per actor), not one block per task, since
Ray keeps driver memory per block. A block whose actor was lost with its node is sent again whole;
``TaskActor.recorded`` lets the actor skip the tasks of it that had already written their record, so a lost
node costs the task in flight, not the block.

Ray Data carries columns of Arrow values: a task crosses it as one JSON string (``Task.to_row`` /
``Task.from_row``, the one place where a task is encoded), so that its lists and dicts (face files,
model contract, a dataset row) arrive exactly as they were sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, ClassVar, ContextManager, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import ray
from ray.data import ActorPoolStrategy

from dflray.io.storage import atomic_write, exists, join, list_files, open_uri
from dflray.runtime import input_blocks

log = logging.getLogger("dflray.generate")

# Tasks per actor in one pipeline of ``run_tasks``: a window of tasks is this many times the pool's actors
# (4,096 on two CPUs). A window costs one actor pool's start (~10 s) and its tail; the driver holds one
# window's tasks and their encoded rows, so its memory follows the cluster's size, not the stage's.
TASKS_PER_ACTOR = 2048

__all__ = ["TASKS_PER_ACTOR", "GenerateSummary", "TableList", "TableRows", "Task", "TaskActor", "TaskResult",
           "default_work", "done_ids", "read_json", "record_result", "run_tasks", "stage_clock", "videos_by_identity",
           "work_of", "write_json"]


@dataclass
class GenerateSummary:
    """What a ``dflray generate`` run did."""

    out: str
    videos: int = 0
    identities: int = 0
    fakes_planned: int = 0
    models: int = 0
    models_failed: int = 0
    merged: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # ``quality.success_stats`` of the published fakes (one value per fake, not per compression level).
    swap_success: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        from dflray.quality import format_success

        fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"  # noqa: E731
        lines = [f"generate → {self.out}: {self.videos} real videos, {self.identities} identities "
                 f"(videos per split: {fmt(self.by_split)}), {self.fakes_planned} fakes planned, "
                 f"{self.models} models ({self.models_failed} failed)",
                 f"  merged: {fmt(self.merged)}; published videos: {fmt(self.published)}"]
        if self.swap_success.get("n") or self.swap_success.get("unmeasured"):
            lines.append(f"  published fakes: {format_success(self.swap_success)}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items())
                     + f"; total {self.seconds:.1f}")
        lines += [f"  failed: {f}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  … and {len(self.failures) - 20} more (see errors.parquet)")
        return "\n".join(lines)


def stage_clock(stage_seconds: dict[str, float], logger: logging.Logger) -> Callable[[str], ContextManager[None]]:
    """``with timed(name):`` adds the block's seconds to ``stage_seconds[name]`` and logs the total (the
    per-stage times of a job's summary)."""

    @contextlib.contextmanager
    def timed(name: str) -> Iterator[None]:
        s = time.perf_counter()
        try:
            yield
        finally:
            stage_seconds[name] = stage_seconds.get(name, 0.0) + time.perf_counter() - s
            logger.info("stage %s: %.1f s", name, stage_seconds[name])

    return timed


# ------------------------------------------------------------------------------ records


def write_json(uri: str, doc: Any) -> None:
    """Writes ``doc`` as JSON to ``uri`` atomically (the records and markers of ``WORK``)."""
    with atomic_write(uri) as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True, default=str).encode())


def videos_by_identity(plan: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Identity → the video ids of its REAL plan rows, in plan order (a source person's videos)."""
    out: dict[str, list[str]] = {}
    for r in plan:
        if r["kind"] == "REAL":
            out.setdefault(r["identity"], []).append(r["video_id"])
    return out


def read_json(uri: str) -> Any:
    """The JSON document at ``uri``."""
    with open_uri(uri) as f:
        return json.load(f)


def default_work(out: str) -> str:
    """Where a dataset's working files go when ``--work`` is not given: beside ``out``, never inside it
    (``/data/ds`` → ``/data/ds.work``), so that nothing under the published root but the layout is found
    by readers that walk it (every ``.mp4``, every ``metadata.json``)."""
    base = out.rstrip("/")
    _, sep, path = base.rpartition("://")
    if not path.strip("/") or (sep and "/" not in path):
        raise ValueError(f"--out {out} is a bucket or file system root: give --work (the working files "
                         "must live outside the published root)")
    return base + ".work"


def work_of(out: str) -> str:
    """The work location of the dataset generated into ``out``, as its ``generate.json`` records it
    (datasets generated before the record kept it in ``out/_work``)."""
    doc = read_json(join(out, "generate.json"))
    return doc.get("work") or join(out, "_work")


class TableRows(Mapping[str, dict]):
    """The rows of an Arrow table by a key column, each read as a dict when asked for.

    Per-item state the driver keeps through several stages (a merge record per fake) stays a table: a
    few KiB a row as Arrow, several times that as a Python dict of its ~60 values.

    Example:
        >>> rows = TableRows(pa.table({"id": ["a", "b"], "x": [1, 2]}), "id")  # doctest: +SKIP
        >>> rows["b"]  # doctest: +SKIP
        {'id': 'b', 'x': 2}
    """

    def __init__(self, table: Any, key: str):
        self.table = table
        self._at = {k: i for i, k in enumerate(table.column(key).to_pylist())}

    def __getitem__(self, key: str) -> dict:
        return self.table.slice(self._at[key], 1).to_pylist()[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)


class TableList(Sequence[dict]):
    """The rows of an Arrow table as a sequence of dicts, each made when it is read (by position, or a batch at
    a time when iterated): per-video rows the driver keeps through the whole job (the plan) stay a table.

    Example:
        >>> rows = TableList(pa.table({"id": ["a", "b"]}))  # doctest: +SKIP
        >>> [r["id"] for r in rows], rows[1]  # doctest: +SKIP
        (['a', 'b'], {'id': 'b'})
    """

    def __init__(self, table: Any):
        self.table = table

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self.table.slice(i % n, 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict]:
        for batch in self.table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows


def done_ids(folder: str, suffix: str) -> set[str]:
    """The names (without ``suffix``) of the record files directly under ``folder``: the items done."""
    return {u.rsplit("/", 1)[-1].removesuffix(suffix) for u in list_files(folder, suffix)}


# ------------------------------------------------------------------------------ tasks on an actor pool


_T = TypeVar("_T", bound="Task")


@dataclass(frozen=True)
class Task:
    """Base of the typed tasks a stage sends through Ray Data; ``id`` names the item in logs and errors."""

    id: str

    def to_row(self) -> dict[str, str]:
        """The Ray Data row that carries this task."""
        return {"task": json.dumps(dataclasses.asdict(self), default=str)}

    @classmethod
    def from_row(cls: type[_T], value: Any) -> _T:
        """The task a row's ``task`` value carries (see ``to_row``)."""
        return cls(**json.loads(str(value)))


@dataclass(frozen=True)
class TaskResult:
    """How one task ended: ``status`` ``"ok"`` or ``"error"`` (then ``error`` says why)."""

    id: str
    status: str
    error: str = ""

    def to_row(self) -> str:
        """The value of the ``result`` column that carries this result."""
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def from_row(cls, value: Any) -> "TaskResult":
        """The result a row's ``result`` value carries (see ``to_row``)."""
        return cls(**json.loads(str(value)))


class TaskActor:
    """Base of the stage actors: one typed task in (``task_type``), one ``TaskResult`` out, exceptions
    become error results. A task whose record exists already (``recorded``) is not run again."""

    task_type: ClassVar[type[Task]] = Task

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for raw in batch["task"]:
            task = self.task_type.from_row(raw)
            try:
                result = self.recorded(task)
                if result is not None:
                    log.info("%s: %s already recorded (its block was sent again)", type(self).__name__, task.id)
                else:
                    result = self.run(task)
            except Exception as e:  # noqa: BLE001 - one bad item is an error row, never a dead job
                log.warning("%s failed for %s: %s: %s", type(self).__name__, task.id, type(e).__name__, e)
                result = TaskResult(task.id, "error", f"{type(e).__name__}: {e}")
            out.append(result.to_row())
        return {"result": np.array(out, dtype=object)}

    def run(self, task: Any) -> TaskResult:  # pragma: no cover - overridden
        raise NotImplementedError

    def recorded(self, task: Any) -> TaskResult | None:
        """The result of ``task`` if its record was written already, else None (then it runs).

        The driver sends only tasks without a record, so one is found here only when a block is sent again
        after its actor was lost: the tasks of it done before the loss are answered from their records.
        A stage whose task writes a record (its done-marker) overrides this; the default runs every task.
        """
        return None


def record_result(task_id: str, uri: str) -> TaskResult | None:
    """What the one-row Parquet record at ``uri`` (with ``status`` and ``error`` columns) says of task
    ``task_id``, or None where there is no record (a ``TaskActor.recorded`` of a stage whose record is one)."""
    import pyarrow.parquet as pq

    if not exists(uri):
        return None
    with open_uri(uri) as f:
        rows = pq.read_table(f, columns=["status", "error"]).to_pylist()
    return TaskResult(task_id, rows[0]["status"], rows[0]["error"] or "") if rows else None


def _pool(n_tasks: int, num_cpus: float) -> int:
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, min(n_tasks, int(cpus // num_cpus) or 1))


def run_tasks(actor: type[TaskActor], tasks: Iterable[Task], num_cpus: float, kwargs: dict[str, Any],
              num_gpus: float = 0.0, window: int | None = None) -> list[TaskResult]:
    """Runs ``tasks`` on Ray Data pools of ``actor`` (built with ``kwargs``), one task per call.

    The tasks are read as they come, ``window`` at a time (default ``TASKS_PER_ACTOR`` times the actors the
    cluster fits): each window is one pipeline with its own actor pool, so the driver holds one window's
    tasks, however many there are (give a generator, not a list, for that to hold for the tasks themselves).

    Args:
        actor: the stage actor class.
        tasks: its tasks, in the order they should start (consecutive tasks share a block).
        num_cpus: CPUs of one actor (a pool holds as many as the cluster fits, at most one per task).
        kwargs: the actor's constructor arguments.
        num_gpus: GPUs of one actor.
        window: tasks per pipeline.

    Returns:
        One result per task, in no particular order.
    """
    step = max(1, window or TASKS_PER_ACTOR * _pool(sys.maxsize, num_cpus))
    it = iter(tasks)
    results: list[TaskResult] = []
    while chunk := list(islice(it, step)):
        items = [t.to_row() for t in chunk]
        del chunk
        size = _pool(len(items), num_cpus)
        ds = ray.data.from_items(items, override_num_blocks=input_blocks(len(items), size)).map_batches(
            actor, batch_size=1, compute=ActorPoolStrategy(size=size), num_cpus=num_cpus,
            num_gpus=num_gpus or None, fn_constructor_kwargs=kwargs)
        del items
        results += [TaskResult.from_row(r["result"]) for r in ds.iter_rows()]
    return results
