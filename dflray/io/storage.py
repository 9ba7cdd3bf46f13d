"""Storage on any fsspec URL: local paths, file://, s3:// (with s3fs), gs://, memory:// ...

Credentials and endpoints come from each backend's standard environment variables (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ...).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import IO, Iterator

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
MANIFEST_EXTENSIONS = (".txt", ".lst", ".list")


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Splits a URI into its fsspec filesystem and the path inside it."""
    return url_to_fs(uri)


def join(uri: str, *parts: str) -> str:
    """Joins path parts onto a URI with ``/`` (works for local paths and URLs alike)."""
    return posixpath.join(uri.rstrip("/"), *parts) if "://" in uri else os.path.join(uri, *parts)


def protocol(uri: str) -> str:
    fs, _ = fs_and_path(uri)
    p = fs.protocol
    return p if isinstance(p, str) else p[0]


def open_uri(uri: str, mode: str = "rb") -> IO:
    """Opens a URI as a file object."""
    return fsspec.open(uri, mode).open()


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a URI (local paths use pyarrow's native local filesystem)."""
    fs, path = fs_and_path(uri)
    if protocol(uri) in ("file", "local"):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Full URIs of the files directly under a folder URI (empty if the folder does not exist)."""
    fs, path = fs_and_path(uri)
    if not fs.exists(path):
        return []
    out = []
    for info in fs.ls(path, detail=True):
        if info["type"] == "file" and info["name"].endswith(suffix):
            out.append(_unstrip(uri, path, info["name"]))
    return sorted(out)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def move(src: str, dst: str) -> None:
    """Moves a file; on object stores this is copy + delete, so readers must only trust committed names."""
    fs, sp = fs_and_path(src)
    _, dp = fs_and_path(dst)
    parent = posixpath.dirname(dp)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.mv(sp, dp)


@contextlib.contextmanager
def atomic_write(uri: str, mode: str = "wb") -> Iterator[IO]:
    """Writes to a temporary name beside ``uri`` and renames it into place only on success."""
    fs, path = fs_and_path(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    try:
        with fs.open(tmp, mode) as f:
            yield f
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _unstrip(uri: str, path: str, name: str) -> str:
    """Rebuilds a full URI for ``name`` found under ``path`` (fsspec strips the protocol)."""
    if "://" not in uri:
        return name
    proto = uri.split("://", 1)[0]
    return f"{proto}://{name.lstrip('/')}" if proto != "file" else f"file://{name}"


def expand_inputs(inputs: list[str]) -> list[str]:
    """Expands video inputs into a sorted, de-duplicated list of video URIs.

    Each input may be a video file, a folder (its video files, recursively), a glob, or a text
    manifest (one URI per line; blank lines and ``#`` comments ignored; relative entries are taken
    relative to the manifest). A path that does not exist is kept as given, so the job reports it as
    an error row instead of silently dropping it.

    Example:
        >>> expand_inputs(["/data/clips/", "more.txt", "s3://bucket/raw/*.mp4"])  # doctest: +SKIP
    """
    out: list[str] = []
    for item in inputs:
        fs, path = fs_and_path(item)
        if any(ch in item for ch in "*?["):
            out += [_unstrip(item, path, p) for p in sorted(fs.glob(path)) if fs.isfile(p)]
        elif item.lower().endswith(MANIFEST_EXTENSIONS) and fs.isfile(path):
            base = item.rsplit("/", 1)[0] if "/" in item else "."
            with fs.open(path, "rt") as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    if "://" not in line and not os.path.isabs(line):
                        line = join(base, line)
                    out.append(line)
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if p.lower().endswith(VIDEO_EXTENSIONS)]
            out += [_unstrip(item, path, p) for p in sorted(found)]
        else:
            out.append(item)
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]
