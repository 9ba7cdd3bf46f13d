"""Storage on any fsspec URL: local paths, file://, s3:// (with s3fs), gs://, memory:// ...

Credentials and endpoints come from each backend's standard environment variables (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import socket
import uuid
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

import fsspec
import fsspec.asyn
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
MANIFEST_EXTENSIONS = (".txt", ".lst", ".list")

log = logging.getLogger("dflray.io.storage")


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


def normalize_uri(uri: str) -> str:
    """The one spelling of an input URI: what a video's id (``dflray.faceset.video_id``) is a hash of.

    Local paths become absolute normalised paths (``clip.mp4`` typed in another folder is another file;
    ``sub/../clip.mp4`` is the same one); ``file://`` paths are normalised too. Other URLs keep their
    path as given (``a//b`` and ``a/../b`` are keys of their own on object stores); only the scheme, and an
    HTTP host, are lower-cased.

    Example:
        >>> normalize_uri("/data/x/../a.mp4"), normalize_uri("S3://bucket/a.mp4")
        ('/data/a.mp4', 's3://bucket/a.mp4')
    """
    if "://" not in uri:
        return os.path.normpath(os.path.abspath(uri))
    proto, rest = uri.split("://", 1)
    proto = proto.lower()
    if proto == "file":
        return "file://" + (posixpath.normpath(rest) if rest.startswith("/") else rest)
    if proto in ("http", "https"):
        host, sep, tail = rest.partition("/")
        if "@" not in host:  # credentials in the netloc keep their case
            host = host.lower()
        rest = host + sep + tail
    return f"{proto}://{rest}"


def resolve_entry(base: str, entry: str) -> str:
    """A manifest's entry as a URI: absolute entries as given, relative ones under the manifest's folder
    ``base`` (``..`` steps up a folder, on object stores too), then ``normalize_uri``'d.

    Example:
        >>> resolve_entry("s3://b/lists", "../clips/a.mp4")
        's3://b/clips/a.mp4'
    """
    if "://" not in entry and not os.path.isabs(entry):
        entry = join(base, entry)
        if "://" in entry:
            proto, rest = entry.split("://", 1)
            entry = f"{proto}://{posixpath.normpath(rest)}"
    return normalize_uri(entry)


def fingerprint(uri: str, info: dict | None = None) -> str:
    """What tells a file apart from another one under the same URI: ``"SIZE:STAMP"``.

    The stamp is the modification time in nanoseconds for local files, else the store's ETag (a content
    hash on S3 and GCS) or its modification time, from fsspec's ``info()`` (``info`` when the caller
    already has it from a listing).

    Raises:
        Whatever the storage raises when the file cannot be looked at (see ``describe_error``).

    Example:
        >>> fingerprint("clip.mp4")  # doctest: +SKIP
        '1048576:1733400000123456789'
    """
    if "://" not in uri or uri.startswith("file://"):
        st = os.stat(fs_and_path(uri)[1])
        return f"{st.st_size}:{st.st_mtime_ns}"
    if info is None:
        fs, path = fs_and_path(uri)
        info = fs.info(path)
    stamp = next((info[k] for k in _STAMPS if info.get(k)), None)
    stamp = str(stamp.isoformat() if hasattr(stamp, "isoformat") else stamp).strip('"') if stamp else ""
    return f"{info.get('size')}:{stamp}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe_error(exc: BaseException) -> str:
    """Why a storage call failed, in one line a user can act on (never a traceback).

    Looks through the exceptions ``exc`` was raised from for the cause: missing cloud credentials, an
    endpoint that cannot be reached, a refused connection, an HTTP status, a timeout; else the first line
    of the error itself.

    Example:
        >>> describe_error(ConnectionRefusedError(111, "Connection refused"))
        'connection refused'
    """
    import errno

    chain = _chain(exc)
    for e in chain:
        name = type(e).__name__
        if name == "NoCredentialsError" or name == "PartialCredentialsError":
            return ("no credentials for s3 (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a "
                    "role)")
        if name in ("EndpointConnectionError", "ConnectTimeoutError"):
            url = str(getattr(e, "kwargs", {}).get("endpoint_url", "")).split("?", 1)[0]
            parts = url.split("/")
            where = "/".join(parts[:3]) if len(parts) >= 3 else url
            return f"endpoint unreachable: {where or _one_line(e)}"
        status = getattr(e, "status", None)
        if name.endswith("ResponseError") and isinstance(status, int):
            reason = getattr(e, "message", "") or ""
            return f"HTTP {status} {reason}".strip()
        if name == "ClientError" and hasattr(e, "response"):
            err = e.response.get("Error", {})
            return _one_line(f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")) or _one_line(e)
    for e in chain:
        host = getattr(e, "host", None)
        where = f" ({host}:{getattr(e, 'port', '')})" if host else ""
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return f"connection refused{where}"
        if type(e).__name__ == "ClientConnectorDNSError" or isinstance(e, socket.gaierror):
            return f"host not found{where}"
        if isinstance(e, TimeoutError):
            return f"timed out{where}"
    innermost = chain[-1]
    if isinstance(innermost, FileNotFoundError):
        return "not found"
    if isinstance(innermost, PermissionError):
        return f"permission denied: {_one_line(innermost)}"
    return _one_line(f"{type(innermost).__name__}: {innermost}".rstrip(": "))


def _is_missing(exc: BaseException) -> bool:
    """True when the storage answered that the file is not there (not when it could not be asked)."""
    chain = _chain(exc)
    if not isinstance(chain[0], FileNotFoundError):
        return False
    for e in chain[1:]:
        status = getattr(e, "status", None)
        code = getattr(e, "response", {}).get("Error", {}).get("Code") if hasattr(e, "response") else None
        if status in (404, 410) or code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return True
        if isinstance(e, FileNotFoundError):
            continue
        return False
    return True


@dataclass(frozen=True)
class InputProblem:
    """An input that yields no video to process.

    Attributes:
        input: the input (normalised URI).
        type: ``NoMatch`` (a glob, folder or manifest naming no video) or the failing storage error's class.
        message: one line: the input and why.
        video: True when the input could itself be a video that could not be reached (it gets a ``videos``
            row with status error); False for a pattern or folder that matched nothing.
    """

    input: str
    type: str
    message: str
    video: bool


@dataclass
class Inputs:
    """Expanded inputs: the video URIs (normalised, de-duplicated, in input order), each one's
    ``fingerprint`` (None when it could not be looked at because it is missing: the probe reports it), and
    the inputs that yield nothing."""

    uris: list[str] = field(default_factory=list)
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    problems: list[InputProblem] = field(default_factory=list)


def _cause_type(exc: BaseException) -> str:
    chain = _chain(exc)
    named = [e for e in chain if type(e).__name__ not in ("FileNotFoundError", "OSError")]
    return type((named or chain)[0]).__name__


def _expand_one(item: str) -> list[tuple[str, dict | None]] | str:
    """The (uri, listing info) of one input's videos, or why it names none (a message)."""
    fs, path = fs_and_path(item)
    if any(ch in item for ch in "*?["):
        found = fs.glob(path, detail=True)
        files = [(_unstrip(item, path, p), i) for p, i in sorted(found.items()) if i.get("type") == "file"]
        return files or "matches no file"
    if item.lower().endswith(MANIFEST_EXTENSIONS) and fs.isfile(path):
        base = item.rsplit("/", 1)[0] if "/" in item else "."
        entries: list[tuple[str, dict | None]] = []
        with fs.open(path, "rt") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                entries.append((resolve_entry(base, line), None))
        return entries or "lists no video"
    paged = _paged_lister(fs)
    if paged is not None or fs.isdir(path):  # an object store is listed first: its isdir lists a level too
        listed = 0
        files = []
        for p, info in (paged or _walk_files)(fs, path):
            listed += 1
            if p.lower().endswith(VIDEO_EXTENSIONS):
                files.append((_unstrip(item, path, p), _slim(info)))
        if listed or paged is None:  # a prefix with no key under it is a file's name (or nothing)
            return files or "holds no video files"
    return [(item, None)]


# The listing info fingerprint() reads: the size and the first stamp a store gives.
_STAMPS = ("ETag", "etag", "md5Hash", "LastModified", "last_modified", "Last-Modified", "updated", "mtime", "created")


def _slim(info: dict) -> dict:
    """What ``fingerprint`` needs of a listing entry (a full S3 entry is ~1 KB; 100,000 add up)."""
    stamp = next((k for k in _STAMPS if info.get(k)), None)
    return {"size": info.get("size"), **({stamp: info[stamp]} if stamp else {})}


def _walk_files(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[tuple[str, dict]]:
    """Every file under ``path`` with its listing info, a folder at a time (``fs.walk``)."""
    for _root, _dirs, files in fs.walk(path, detail=True):
        for _name, info in sorted(files.items()):  # keyed by base name; info["name"] is the path
            if info.get("type", "file") == "file":
                yield info["name"], info


_PAGE = 1000  # S3's own page size: one ListObjectsV2 request per page


async def _next_page(entries: Any, n: int) -> list[dict]:
    page: list[dict] = []
    with contextlib.suppress(StopAsyncIteration):
        while len(page) < n:
            page.append(await entries.__anext__())
    return page


def _paged_lister(fs: fsspec.AbstractFileSystem):
    """A streaming lister for s3fs: one flat, paginated listing of the prefix, a page at a time, kept
    out of s3fs's listings cache (its ``find`` holds every key of the prefix in memory, several times,
    and caches them). None for other filesystems."""
    iterdir = getattr(fs, "_iterdir", None)
    if iterdir is None or not hasattr(fs, "split_path") or "s3" not in fs.protocol:
        return None

    def files(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[tuple[str, dict]]:
        bucket, key, _ = fs.split_path(path)
        entries = iterdir(bucket, delimiter="", prefix=f"{key.strip('/')}/" if key.strip("/") else "")
        while True:
            page = fsspec.asyn.sync(fs.loop, _next_page, entries, _PAGE)
            for info in page:
                if info.get("type") == "file" and not info["name"].endswith("/"):  # not folder placeholders
                    yield info["name"], info
            if len(page) < _PAGE:
                return

    return files


def _look(uri: str, info: dict | None) -> tuple[str | None, BaseException | None]:
    try:
        return fingerprint(uri, info), None
    except Exception as e:  # noqa: BLE001 - sorted below: missing (probe reports it) or unreachable
        return None, (None if _is_missing(e) else e)


def scan_inputs(inputs: list[str], fingerprints: bool = True) -> Inputs:
    """Expands video inputs and looks at each video once (``fingerprint``), reporting what goes wrong.

    Each input may be a video file, a folder (its video files, recursively), a glob, or a text manifest
    (one URI per line; blank lines and ``#`` comments ignored; relative entries are taken relative to
    the manifest), on any fsspec URL. Every URI is ``normalize_uri``'d. A file that does not exist is
    kept (the job reports it as an error row); an input that cannot be listed or looked at (no
    credentials, endpoint down, connection refused, HTTP error) and a glob, folder or manifest naming no
    video are ``problems`` with a one-line message, never an exception, so the other inputs still run.

    Args:
        inputs: the inputs as typed.
        fingerprints: look at each video (a stat, or one request per file a listing did not describe).

    Example:
        >>> scan = scan_inputs(["/data/clips/", "more.txt", "s3://bucket/raw/*.mp4"])  # doctest: +SKIP
        >>> scan.uris, scan.problems  # doctest: +SKIP
    """
    from concurrent.futures import ThreadPoolExecutor

    found: dict[str, dict | None] = {}
    out = Inputs()
    for raw in inputs:
        item = normalize_uri(raw)
        try:
            got = _expand_one(item)
        except Exception as e:  # noqa: BLE001 - any storage error: this input fails, the others run
            if _is_missing(e):  # not there: kept, so the probe reports it like any missing file
                found.setdefault(item, None)
                continue
            out.problems.append(InputProblem(item, _cause_type(e), f"{item}: {describe_error(e)}", True))
            continue
        if isinstance(got, str):
            out.problems.append(InputProblem(item, "NoMatch", f"{item}: {got}", False))
            continue
        for uri, info in got:
            found.setdefault(uri, info)
    if not fingerprints:
        out.uris = list(found)
        out.fingerprints = dict.fromkeys(found)
        return out
    # One request per remote file a listing did not describe, 16 at a time; 1,000 queued at most (a
    # future per file of a 100,000-row manifest would outweigh the listing itself).
    remote = [u for u, info in found.items() if info is None and "://" in u and not u.startswith("file://")]
    looked: dict[str, tuple[str | None, BaseException | None]] = {}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(remote)))) as pool:
        for start in range(0, len(remote), 1000):
            chunk = remote[start:start + 1000]
            looked.update(zip(chunk, pool.map(lambda u: _look(u, None), chunk)))
    for uri, info in found.items():
        fp, err = looked[uri] if uri in looked else _look(uri, info)
        if err is not None:
            out.problems.append(InputProblem(uri, _cause_type(err), f"{uri}: {describe_error(err)}", True))
            continue
        out.uris.append(uri)
        out.fingerprints[uri] = fp
    return out


def expand_inputs(inputs: list[str]) -> list[str]:
    """Expands video inputs into a de-duplicated list of normalised video URIs (``scan_inputs`` without
    looking at each file); inputs that yield no video are logged as warnings.

    Example:
        >>> expand_inputs(["/data/clips/", "more.txt", "s3://bucket/raw/*.mp4"])  # doctest: +SKIP
    """
    scan = scan_inputs(inputs, fingerprints=False)
    for p in scan.problems:
        log.warning("input %s", p.message)
    return scan.uris
