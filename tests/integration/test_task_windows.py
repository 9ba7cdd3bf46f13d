"""``run_tasks`` reads its tasks in windows: a window's tasks are all done before the next window's are made."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import ray

from dflray.dataset.stages.base import Task, TaskActor, TaskResult, run_tasks

# The actor below is defined in this test module, which Ray's workers cannot import: send it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class _NoteTask(Task):
    folder: str = ""


class _Noter(TaskActor):
    """Writes the task's record (its id) under ``folder``."""

    task_type = _NoteTask

    def run(self, task: _NoteTask) -> TaskResult:
        Path(task.folder, f"{task.id}.json").write_text(json.dumps({"id": task.id}))
        return TaskResult(task.id, "ok" if task.id != "t4" else "error", "" if task.id != "t4" else "bad")


def test_tasks_run_a_window_at_a_time(ray_local, tmp_path):
    made: list[tuple[int, list[str]]] = []  # (task made, records on disk when it was made)

    def tasks():
        for i in range(7):
            made.append((i, sorted(p.stem for p in tmp_path.glob("*.json"))))
            yield _NoteTask(id=f"t{i}", folder=str(tmp_path))

    results = run_tasks(_Noter, tasks(), 1.0, {}, window=3)
    assert sorted(r.id for r in results) == [f"t{i}" for i in range(7)]
    assert {r.id: (r.status, r.error) for r in results}["t4"] == ("error", "bad")
    # The generator is read lazily: a window's first task is made only once the window before it is done.
    seen = dict(made)
    assert seen[0] == [] and seen[1] == [] and seen[2] == []
    assert seen[3] == ["t0", "t1", "t2"] and seen[5] == ["t0", "t1", "t2"]
    assert seen[6] == [f"t{i}" for i in range(6)]
    assert sorted(os.listdir(tmp_path)) == [f"t{i}.json" for i in range(7)]


def test_no_tasks_no_pipeline(ray_local):
    assert run_tasks(_Noter, iter(()), 1.0, {}, window=3) == []


def test_default_window_is_tasks_per_actor_times_the_pool(ray_local, tmp_path, monkeypatch):
    """Without ``window``, a window holds ``TASKS_PER_ACTOR`` tasks per actor the cluster fits (two 1-CPU
    actors on this 2-CPU Ray): the driver's share follows the cluster's size, not the stage's."""
    from dflray.dataset.stages import base

    monkeypatch.setattr(base, "TASKS_PER_ACTOR", 1)
    made: list[list[str]] = []

    def tasks():
        for i in range(5):
            made.append(sorted(p.stem for p in tmp_path.glob("*.json")))
            yield _NoteTask(id=f"t{i}", folder=str(tmp_path))

    assert len(run_tasks(_Noter, tasks(), 1.0, {})) == 5
    assert made == [[], [], ["t0", "t1"], ["t0", "t1"], ["t0", "t1", "t2", "t3"]]
