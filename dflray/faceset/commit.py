"""The one commit protocol of every dflray output root: stage → move in → record.

A unit of work — an extraction chunk, a DeepFaceLab import, one merged video, one published dataset
video — becomes part of its output only when its *record* exists: a one-file Parquet table (current
schema) written last, atomically. Until then its other files are invisible to readers:

1. **stage**: write the unit's files where readers do not look (``Commit.staging``, a local temporary
   file, or a name whose run has no record yet);
2. **move in**: move them to their final names (``Commit.move_in``, ``Commit.publish``) and write the
   unit's data tables (``Commit.write``);
3. **record**: ``Commit.record`` writes the record that makes the unit real.

A crash at any step leaves no half-visible unit, and a rerun redoes exactly the units without a record
(``faceset_recover`` for facesets: staging removed, face files of unrecorded runs deleted). Extraction,
``import-dfl``, merge and ``generate`` all commit through this module.

Example:
    >>> c = Commit("s3://bucket/facesets/a")  # doctest: +SKIP
    >>> for f in staged_face_files:  # doctest: +SKIP
    ...     c.move_in(f, f"faces/{c.run_id}-{basename(f)}")
    >>> c.write("errors", errors, f"errors/{c.run_id}.parquet")  # doctest: +SKIP
    >>> c.record("videos", videos, f"videos/{c.run_id}.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from dflray.faceset.read import face_files_by_commit, latest_records
from dflray.io import schema
from dflray.io.storage import (
    arrow_filesystem,
    atomic_write,
    exists,
    fs_and_path,
    join,
    list_files,
    makedirs,
    move,
    open_uri,
    protocol,
    remove,
)

__all__ = [
    "Commit",
    "Done",
    "check_writable",
    "undone_if_failed",
    "faceset_recover",
    "new_run_id",
    "publish_file",
    "read_tables",
    "sha256_file",
    "write_table",
]

STAGING = "_staging"


def new_run_id() -> str:
    """A run id that sorts by start time and never repeats: ``YYYYmmddHHMMSS``, microseconds, 8 hex digits.

    Runs of one faceset sort in the order they started even within a second: a video's latest record
    (``read_videos``) is the one of the run that sorts last.
    """
    ns = time.time_ns()
    return time.strftime("%Y%m%d%H%M%S", time.localtime(ns // 10**9)) + f"{ns // 1000 % 10**6:06d}" + uuid.uuid4().hex[:8]


def sha256_file(path: str) -> str:
    """SHA-256 of a file (a local path or any fsspec URL), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open_uri(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_table(name: str, rows: list[dict[str, Any]], uri: str) -> None:
    """Writes ``rows`` as a Parquet file of schema table ``name`` (``dflray.io.schema``), atomically."""
    with atomic_write(uri, "wb") as f:
        pq.write_table(schema.table_from_rows(name, rows), f)


def read_tables(name: str, directory: str, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet file of ``directory`` as one table of schema ``name``, upgraded to the current version."""
    fs, _ = arrow_filesystem(directory)
    files = [fs_and_path(u)[1] for u in list_files(directory, ".parquet")]
    return schema.read_table(name, files, filesystem=fs, columns=columns)


def publish_file(local: str, uri: str) -> str:
    """Moves a finished local file to ``uri`` under a temporary name, then its own; returns its sha256.

    On a local filesystem the file is moved (no copy) and renamed into place atomically; on object
    storage it is uploaded through ``atomic_write``. Either way a reader never sees a partial file.
    """
    digest = sha256_file(local)
    if protocol(uri) in ("file", "local"):
        path = fs_and_path(uri)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            shutil.move(local, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        with atomic_write(uri) as f, open(local, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 22)
    return digest


def check_writable(out: str, option: str = "--out") -> None:
    """Fails before any work when ``out`` cannot be written (creates it, writes and removes a probe file).

    Raises:
        ValueError: naming ``option``, with the storage's own error.
    """
    try:
        makedirs(out)
        probe = join(out, f".write-test-{uuid.uuid4().hex}")
        with atomic_write(probe) as f:
            f.write(b"ok")
        remove(probe)
    except Exception as e:  # noqa: BLE001 - any storage error means the same to the user
        raise ValueError(f"{option}: cannot write to {out}: {type(e).__name__}: {e}") from e


@contextmanager
def undone_if_failed(out: str) -> Iterator[None]:
    """Removes ``out`` again when a check inside fails and ``out`` did not exist before.

    A run's checks before work (``check_writable`` creates the root to probe it) must not leave an
    empty output behind when a later check, e.g. of the model, refuses the run.
    """
    existed = exists(out)
    try:
        yield
    except BaseException:
        if not existed and exists(out):
            remove(out, recursive=True)
        raise


@dataclass
class Commit:
    """One unit of work committed into an output root: stage, move in, then record.

    Attributes:
        root: the output root (any fsspec URL).
        run_id: the unit's run id (``new_run_id`` by default); names its staged and final files.
    """

    root: str
    run_id: str = field(default_factory=new_run_id)
    recorded: bool = field(default=False, init=False)
    _staged: bool = field(default=False, init=False, repr=False)

    @property
    def staging(self) -> str:
        """The unit's private folder (``ROOT/_staging/RUN_ID``): readers never look there."""
        self._staged = True
        return join(self.root, STAGING, self.run_id)

    def _final(self, rel: str) -> str:
        if self.recorded:
            raise RuntimeError(f"commit {self.run_id} is already recorded; {rel} would land after its record")
        return join(self.root, rel)

    def move_in(self, staged: str, rel: str) -> str:
        """Moves a staged file (any URI on the root's storage) to ``ROOT/rel``; returns its URI."""
        dst = self._final(rel)
        move(staged, dst)
        return dst

    def publish(self, local: str, rel: str) -> str:
        """Moves a finished local file to ``ROOT/rel`` (``publish_file``); returns its sha256."""
        return publish_file(local, self._final(rel))

    def write(self, name: str, rows: list[dict[str, Any]], rel: str) -> None:
        """Writes one of the unit's data tables (``write_table``) before its record."""
        write_table(name, rows, self._final(rel))

    def remove(self, rel: str) -> None:
        """Removes ``ROOT/rel`` if present (e.g. a failed earlier attempt's error row), before the record."""
        remove(self._final(rel))

    def record(self, name: str, rows: list[dict[str, Any]], rel: str) -> None:
        """Writes the unit's record, the step that makes it real, and removes its staging folder."""
        write_table(name, rows, self._final(rel))
        self.recorded = True
        self.discard()

    def discard(self) -> None:
        """Removes the unit's staging folder, if it used one (after its record, or to abandon it)."""
        if self._staged:
            remove(self.staging, recursive=True)


class Done(NamedTuple):
    """What a faceset holds of a video: its latest record's status, faces and fingerprint."""

    status: str
    faces: int
    fingerprint: str | None


def faceset_recover(out: str) -> dict[str, Done]:
    """Clears what crashed runs left in a faceset and returns the videos already committed.

    A faceset's record is its ``videos/RUN_ID.parquet``: the staging folder goes, and so does every
    ``faces/RUN_ID-*.parquet`` whose run has no videos record.

    Returns:
        video_id → its latest record (``Done``); ``vid in faceset_recover(out)`` says it was committed.
    """
    remove(join(out, STAGING), recursive=True)
    for f in face_files_by_commit(out)[1]:
        remove(f)
    table = latest_records(read_tables("videos", join(out, "videos"),
                                       columns=["video_id", "status", "faces", "fingerprint"]))
    return {r["video_id"]: Done(r["status"], r["faces"] or 0, r["fingerprint"]) for r in table.to_pylist()}
