"""The extraction ledger: what each segment decoded and which frames failed, as small files in staging.

A Ray actor held this state before, and it was a single point of failure: losing the node it lived on
(or SIGKILLing its process) aborted the whole extraction with ``ActorDiedError``. The staging folder of
the chunk already outlives any worker, so the ledger lives there: one JSON file per segment and one per
failed frame, each written atomically under a name fixed by what it records. A task retried after a lost
node rewrites the same names with the same content, so retries never double-count.
"""

from __future__ import annotations

import json
from typing import Any

from dflray.io.storage import atomic_write, fs_and_path, join, list_files

__all__ = ["FileLedger"]


class FileLedger:
    """Per-segment decode results and per-frame failures of one extraction chunk, under ``root``.

    Picklable (it is only a URI), so Ray ships it to tasks and actors; any process on any node writes to
    it directly.

    Example:
        >>> led = FileLedger("/tmp/staging/ledger")  # doctest: +SKIP
        >>> led.record("a1b2", 0, decoded=300, error=None)  # doctest: +SKIP
        >>> segments, failures = led.dump()  # doctest: +SKIP
    """

    def __init__(self, root: str):
        self.root = root

    def record(self, vid: str, segment: int, decoded: int, error: tuple[str, str] | None) -> None:
        """Records that segment ``segment`` of video ``vid`` decoded ``decoded`` frames (and its error)."""
        self._write(f"seg-{vid}-{int(segment)}.json",
                    {"vid": vid, "segment": int(segment), "decoded": int(decoded),
                     "error": None if error is None else list(error), "node": _node_id()})

    def fail(self, vid: str, frame_index: int, stage: str, kind: str, message: str) -> None:
        """Records that frame ``frame_index`` of ``vid`` failed in ``stage`` (``kind``: the error class)."""
        self._write(f"fail-{vid}-{int(frame_index)}-{stage}.json",
                    {"vid": vid, "frame_index": int(frame_index), "stage": stage, "kind": kind, "message": message})

    def dump(self) -> tuple[dict[tuple[str, int], tuple[int, Any]], dict[tuple[str, int, str], tuple[str, str]]]:
        """``({(vid, segment): (decoded, error)}, {(vid, frame, stage): (kind, message)})`` of every record."""
        segments, failures, _ = self.read()
        return segments, failures

    def read(self) -> tuple[dict[tuple[str, int], tuple[int, Any]], dict[tuple[str, int, str], tuple[str, str]],
                            dict[tuple[str, int], str | None]]:
        """``dump`` plus ``{(vid, segment): node id}``: the Ray node whose worker recorded each segment."""
        segments: dict[tuple[str, int], tuple[int, Any]] = {}
        nodes: dict[tuple[str, int], str | None] = {}
        failures: dict[tuple[str, int, str], tuple[str, str]] = {}
        fs, _ = fs_and_path(self.root)
        for uri in list_files(self.root, ".json"):
            name = uri.rsplit("/", 1)[-1]
            if name.startswith(".tmp-"):
                continue
            with fs.open(fs_and_path(uri)[1], "rb") as f:
                r = json.loads(f.read())
            if name.startswith("seg-"):
                segments[(r["vid"], r["segment"])] = (r["decoded"], None if r["error"] is None else tuple(r["error"]))
                nodes[(r["vid"], r["segment"])] = r.get("node")
            elif name.startswith("fail-"):
                failures[(r["vid"], r["frame_index"], r["stage"])] = (r["kind"], r["message"])
        return segments, failures, nodes

    def _write(self, name: str, doc: dict[str, Any]) -> None:
        with atomic_write(join(self.root, name), "wb") as f:
            f.write(json.dumps(doc).encode())


def _node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
