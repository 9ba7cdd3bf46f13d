"""The extraction job on Ray: videos in, a Parquet faceset out.

Layout of a faceset at ``OUT``::

    OUT/faceset.json              schema version, detector/landmarker, config of the last run
    OUT/faces/<run>-*.parquet     one row per face (dflray.io.schema.FACES)
    OUT/videos/<run>.parquet      one row per input video: the commit record of a run's chunk
    OUT/errors/<run>.parquet      one row per failure
    OUT/_staging/<run>/           work in progress (removed on commit or on the next start)

Work is committed in chunks of ``commit_every`` videos through ``dflray.faceset.Commit``: a chunk's
faces are written to staging, moved into ``faces/``, and only then is ``videos/<run>.parquet``
written: its presence is what makes the chunk real. On CPUs (fused stages) one streaming Ray Data
pipeline serves a window of ``WINDOW_CHUNKS`` chunks: its actors write each segment's faces into its
chunk's staging folder, and the driver commits each chunk as soon as all its segments are done. With
GPU stages each chunk is one pipeline that ends in ``write_parquet``. On start, faces files
without a commit record are deleted and videos that have one are skipped, so a killed job rerun with
the same command finishes the rest with no duplicate rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy, TaskPoolStrategy

from dflray.config import ExtractConfig, to_dict
from dflray.extract.ledger import FileLedger
from dflray.extract.preflight import preflight
from dflray.extract.stages import DetectStage, FaceStage, SegmentStage, decode_segment
from dflray.faceset import Commit, faceset_recover, video_id
from dflray.faceset.commit import STAGING, Done
from dflray.io import schema
from dflray.io.storage import (
    InputProblem,
    Inputs,
    arrow_filesystem,
    atomic_write,
    describe_error,
    fs_and_path,
    join,
    list_files,
    makedirs,
    remove,
    scan_inputs,
)
from dflray.io.video import VideoError, frame_ranges, frame_times, probe
from dflray.runtime import init_ray

log = logging.getLogger("dflray.extract")

# Commit chunks per streaming pipeline (fused stages): every pipeline leaves a little memory in the
# driver for the rest of the job, so a run of 100,000 videos makes ~100 of them, not ~1,600.
WINDOW_CHUNKS = 16
# Blocks of one pipeline at most. What the driver keeps after a pipeline grows with the most blocks a
# pipeline had (~10 KiB a block, bench/README.md): one segment per block up to here, beyond (a window of
# long videos, 300 frames a segment) consecutive segments share a block, so that bound holds whatever
# the videos' length.
MAX_BLOCKS = 1024


@ray.remote(num_cpus=0.25, max_retries=2)
def _probe(uri: str, segment_frames: int = 0, max_frames: int | None = None) -> dict:
    """The video's facts, and where its segments start: with more than one segment, the pts of each
    segment's first frame (one demux of the file here, instead of one in every worker that decodes a
    segment of it: a whole extra read of a remote file per worker)."""
    try:
        info = probe(uri)
        starts = None
        ranges = frame_ranges(info.frame_count, segment_frames, max_frames) if segment_frames else []
        if len(ranges) > 1:
            times = frame_times(uri)
            if times.complete:
                starts = [int(times.pts[a]) if a < len(times.pts) else None for a, _ in ranges]
        return {"ok": True, "info": info.__dict__, "starts": starts}
    except VideoError as e:
        return {"ok": False, "type": "VideoError", "message": str(e)}
    except Exception as e:  # unreadable URL, permission, protocol errors: one error row, not a dead job
        return {"ok": False, "type": type(e).__name__, "message": f"{uri}: {describe_error(e)}"}


@dataclass
class ExtractSummary:
    """What a run did (printed at the end, returned to callers)."""

    out: str
    videos: int = 0
    skipped: int = 0
    frames: int = 0
    faces: int = 0
    errors: int = 0
    seconds: float = 0.0
    detector: str = ""
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        return (f"extract → {self.out}: {self.videos} videos ({status or 'none'}; {self.skipped} already done), "
                f"{self.frames} frames, {self.faces} faces, {self.errors} errors, "
                f"{self.seconds:.1f} s, {self.frames_per_second:.1f} frames/s, detector {self.detector or '-'}")


def run_extract(inputs: list[str], out: str, cfg: ExtractConfig, address: str | None = None) -> ExtractSummary:
    """Runs extraction of ``inputs`` into the faceset at ``out`` on the current Ray cluster.

    Args:
        inputs: video files, folders, globs or manifests on any fsspec URL.
        out: faceset URI (created if missing).
        cfg: the validated extract config.
        address: Ray address (None: RAY_ADDRESS, or a local cluster).

    Returns:
        The run's summary (also logged).

    Example:
        >>> s = run_extract(["clips/"], "s3://bucket/facesets/a", ExtractConfig())  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    scan = scan_inputs(inputs)
    for p in scan.problems:
        log.warning("input %s", p.message)
    if not scan.uris and not any(p.video for p in scan.problems):
        raise ValueError(f"no videos found in {inputs}")
    preflight(out, cfg)  # options that cannot work fail here, before anything is written or started
    makedirs(out)
    init_ray(address)
    todo, failed, notes, skipped = _plan(scan, faceset_recover(out))
    summary = ExtractSummary(out=out, videos=len(todo) + len(failed), skipped=skipped)
    _write_manifest(out, cfg)
    chunks = [todo[i:i + cfg.commit_every] for i in range(0, len(todo), cfg.commit_every)]
    if not chunks and (failed or notes):
        chunks = [[]]  # nothing to extract, but something to record
    step = WINDOW_CHUNKS if cfg.fused else 1
    for k in range(0, len(chunks), step):
        # The inputs that failed before any work ride with the first chunk: its commit records them.
        _run_window(chunks[k:k + step], out, cfg, summary, scan.fingerprints,
                    *((failed, notes) if k == 0 else ((), ())))
    remove(join(out, STAGING), recursive=True)  # each chunk removed its own folder: the parent goes too
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary


def _plan(scan: Inputs, done: dict[str, Done]) -> tuple[list[str], list[InputProblem], list[dict[str, Any]], int]:
    """Splits the inputs against what the faceset holds: (videos to extract, failed inputs that get a
    ``videos`` row, ``errors``-only rows, number skipped as done).

    A video is its normalised URI (``video_id``) *and* its file (``fingerprint``). A committed video is
    skipped while its file is the one extracted; one whose file changed is never skipped silently: if its
    faces are in the faceset it is an ``input``/``Changed`` error (re-extracting would leave the old file's
    faces beside the new one's), else (an error or no_faces record) it is extracted again and its new
    record replaces the old. A committed error of an input that was never read (no fingerprint: missing,
    no credentials, endpoint down) is tried again.
    """
    todo: list[str] = []
    skipped = 0
    notes: list[dict[str, Any]] = []
    for uri in scan.uris:
        prev, now = done.get(video_id(uri)), scan.fingerprints.get(uri)
        if prev is None or (prev.status == "error" and prev.fingerprint is None):
            todo.append(uri)
        elif prev.fingerprint is None or now is None or prev.fingerprint == now:
            skipped += 1  # the same file (or one that cannot tell: a record from before fingerprints, or gone)
        elif prev.faces == 0 and prev.status in ("error", "no_faces"):
            todo.append(uri)
        else:
            notes.append(_input_error(uri, "Changed", f"{uri}: changed since it was extracted (fingerprint "
                                      f"{prev.fingerprint} then, {now} now); its faces in this faceset come from "
                                      "the old file: extract it into a new --out"))
    failed: list[InputProblem] = []
    for p in scan.problems:
        prev = done.get(video_id(p.input)) if p.video else None
        if p.video and (prev is None or (prev.status == "error" and prev.fingerprint is None)):
            failed.append(p)
        else:  # a pattern that matched nothing, or a committed video unreachable now: reported, its record kept
            notes.append(_input_error(p.input, p.type, p.message))
    return todo, failed, notes, skipped


def _input_error(uri: str, kind: str, message: str) -> dict[str, Any]:
    return {"uri": uri, "video_id": video_id(uri), "stage": "input", "type": kind, "message": message}


def _write_manifest(out: str, cfg: ExtractConfig) -> None:
    doc = {"kind": "dflray.faceset", "schema_version": schema.SCHEMA_VERSION, "config": to_dict(cfg),
           "tables": ["errors", "faces", "videos"], "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_write(join(out, "faceset.json"), "wb") as f:
        f.write(json.dumps(doc, indent=2).encode())


@dataclass
class _Chunk:
    """One commit unit of a run: its ``Commit`` and what the driver keeps of it until its record lands."""

    commit: Commit
    videos: dict[str, dict[str, Any]]
    errors: list[dict[str, Any]]
    segments: list[dict[str, Any]]


def _run_window(chunks: list[list[str]], out: str, cfg: ExtractConfig, summary: ExtractSummary,
                fingerprints: dict[str, str | None], failed: Iterable[InputProblem] = (),
                notes: Iterable[dict[str, Any]] = ()) -> None:
    """Extracts and commits ``chunks`` (lists of URIs): their videos probed together, then (CPU, fused)
    one streaming pipeline for all their segments, each chunk committed as soon as its last segment is
    reported, or (GPU stages) one pipeline and commit per chunk."""
    uris = [u for c in chunks for u in c]
    infos = ray.get([_probe.remote(u, cfg.decode.segment_frames, cfg.decode.max_frames) for u in uris])
    units, at = [], 0
    for k, c in enumerate(chunks):
        units.append(_prepare(out, c, infos[at:at + len(c)], cfg, fingerprints, *((failed, notes) if k == 0 else ((), ()))))
        at += len(c)
    if cfg.fused:
        _extract_fused(units, out, cfg, summary)
        return
    for unit in units:
        if unit.segments:
            staging = unit.commit.staging
            # Writers take a sliver of CPU so they stream rows out while the actors hold the rest.
            _build_dataset(unit.segments, cfg, FileLedger(join(staging, "ledger"))).write_parquet(
                join(staging, "faces"), filesystem=arrow_filesystem(out)[0] if "://" in out else None,
                ray_remote_args={"num_cpus": 0.1})
        _finish(unit, out, summary)


def _prepare(out: str, uris: list[str], infos: list[dict], cfg: ExtractConfig, fingerprints: dict[str, str | None],
             failed: Iterable[InputProblem] = (), notes: Iterable[dict[str, Any]] = ()) -> _Chunk:
    """A chunk's commit, its videos' rows from their probes (and the failed inputs it records), and the
    segments to extract."""
    commit = Commit(out)
    run_id = commit.run_id
    videos: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = [{**e, "run_id": run_id} for e in notes]
    segments: list[dict[str, Any]] = []
    for p in failed:
        vid = video_id(p.input)
        videos[vid] = {"video_id": vid, "uri": p.input, "run_id": run_id, "faces": 0, "frames_with_faces": 0,
                       "frames_decoded": 0, "status": "error", "error": p.message}
        errors.append({**_input_error(p.input, p.type, p.message), "run_id": run_id})
    for uri, res in zip(uris, infos):
        vid = video_id(uri)
        row = {"video_id": vid, "uri": uri, "run_id": run_id, "faces": 0, "frames_with_faces": 0, "frames_decoded": 0,
               "fingerprint": fingerprints.get(uri)}
        if not res["ok"]:
            row.update(status="error", error=res["message"])
            errors.append({"uri": uri, "video_id": vid, "stage": "probe", "type": res["type"],
                           "message": res["message"], "run_id": run_id})
        else:
            info = res["info"]
            row.update(fps=info["fps"], frame_count=info["frame_count"], width=info["width"], height=info["height"],
                       duration=info["duration"], rotation=info["rotation"], codec=info["codec"],
                       has_audio=info["has_audio"])
            ranges = frame_ranges(info["frame_count"], cfg.decode.segment_frames, cfg.decode.max_frames)
            if info["frame_count_exact"]:
                n = min(info["frame_count"], cfg.decode.max_frames or info["frame_count"])
                row["_expected"] = len(range(0, n, cfg.decode.every_n))
            starts = res.get("starts") or [None] * len(ranges)
            for k, (a, b) in enumerate(ranges):
                segments.append({"video_id": vid, "uri": uri, "segment": k, "start": a,
                                 "end": -1 if b is None else b, "fps": info["fps"],
                                 "start_pts": starts[k]})
        videos[vid] = row
    return _Chunk(commit, videos, errors, segments)


def _extract_fused(units: list[_Chunk], out: str, cfg: ExtractConfig, summary: ExtractSummary) -> None:
    """One Ray Data pipeline over the segments of every chunk in ``units``: each ``SegmentStage`` actor
    writes its segment's faces into that chunk's staging folder and its ledger, and sends back one small
    row; the driver commits a chunk when the rows of all its segments are in. A row seen twice (a task
    rerun after its output was lost with a node) finds its chunk committed or its segment ticked off.

    One pipeline per window of chunks, not per chunk: every Ray Data pipeline leaves some memory in the
    driver for the rest of the job (bench/README.md, "What the driver holds").
    """
    pending: dict[int, set[tuple[str, int]]] = {}
    segments: list[dict[str, Any]] = []
    for k, unit in enumerate(units):
        staging = unit.commit.staging
        for seg in unit.segments:
            segments.append({**seg, "part": k, "ledger": join(staging, "ledger"),
                             "faces_uri": join(staging, "faces", f"{seg['video_id']}-{seg['segment']:06d}.parquet")})
        pending[k] = {(seg["video_id"], seg["segment"]) for seg in unit.segments}
    for k in [k for k, left in pending.items() if not left]:
        _finish(units[k], out, summary)
        del pending[k]
    if segments:
        for batch in _build_dataset(segments, cfg).iter_batches(batch_size=None, batch_format="pyarrow"):
            for k, vid, seg in zip(*(batch.column(c).to_pylist() for c in ("part", "video_id", "segment"))):
                left = pending.get(k)
                if left is None:
                    continue
                left.discard((vid, seg))
                if not left:
                    _finish(units[k], out, summary)
                    del pending[k]
    if pending:
        raise RuntimeError(f"extraction ended with {sum(map(len, pending.values()))} segments unreported")


def _staged_faces(staging: str) -> list[str]:
    """The chunk's whole staged faces files (not the temporary names of a write a lost worker left)."""
    return [f for f in list_files(join(staging, "faces"), ".parquet") if not f.rsplit("/", 1)[-1].startswith(".tmp-")]


def _finish(unit: _Chunk, out: str, summary: ExtractSummary) -> None:
    """Accounts a chunk's extracted segments and commits it: faces moved in, then errors, then the videos
    record that makes them real."""
    commit, videos, errors = unit.commit, unit.videos, unit.errors
    run_id, staging = commit.run_id, commit.staging
    if unit.segments:
        decoded, failures, nodes = FileLedger(join(staging, "ledger")).read()
        for (vid, _), node in sorted(nodes.items()):
            if node and node not in videos[vid].setdefault("nodes", []):
                videos[vid]["nodes"].append(node)
        summary.detector = _account(videos, errors, decoded, failures, staging, out, run_id) or summary.detector

    for f in _staged_faces(staging):
        commit.move_in(f, f"faces/{run_id}-{f.rsplit('/', 1)[-1]}")
    commit.write("errors", errors, f"errors/{run_id}.parquet")
    commit.record("videos", list(videos.values()), f"videos/{run_id}.parquet")

    for row in videos.values():
        summary.by_status[row["status"]] = summary.by_status.get(row["status"], 0) + 1
        summary.frames += row["frames_decoded"]
        summary.faces += row["faces"]
    summary.errors += len(errors)


def _build_dataset(segments: list[dict[str, Any]], cfg: ExtractConfig, ledger: FileLedger | None = None):
    """The extraction graph over ``segments``: fused (each segment row names its own faces file and
    ledger) or, with GPU stages, decode → detect → faces reporting to ``ledger``."""
    dc, det, lm = cfg.decode, cfg.detect, cfg.landmarks
    # One segment per block: blocks of several segments made extraction 1.6x slower (64 videos: 98 s
    # against 61 s), the actors waiting on the last long blocks. Past MAX_BLOCKS segments they share
    # blocks (a tail of one block in a thousand).
    ds = ray.data.from_items(segments, override_num_blocks=min(len(segments), MAX_BLOCKS))
    if cfg.fused:
        # CPU detection: each actor decodes its segment and runs the whole chain; no frame is copied.
        return ds.map_batches(SegmentStage, batch_size=1, compute=ActorPoolStrategy(size=lm.concurrency),
                              num_cpus=lm.num_cpus, fn_constructor_kwargs={
                                  "decode": dc, "detect": det, "landmarks": lm, "align": cfg.align})
    # GPU detection: decode tasks → a GPU detector pool → CPU face actors, frames streaming between them.
    ds = ds.flat_map(decode_segment, fn_kwargs={"cfg": dc, "ledger": ledger}, num_cpus=dc.num_cpus,
                     compute=TaskPoolStrategy(size=dc.concurrency) if dc.concurrency else None)
    ds = ds.map_batches(DetectStage, fn_constructor_kwargs={"cfg": det, "ledger": ledger}, batch_size=det.batch_size,
                        compute=ActorPoolStrategy(size=det.concurrency), num_gpus=det.num_gpus or None,
                        num_cpus=det.num_cpus)
    ds = ds.map_batches(FaceStage, fn_constructor_kwargs={"landmarks": lm, "align": cfg.align, "ledger": ledger},
                        batch_size=lm.batch_size, compute=ActorPoolStrategy(size=lm.concurrency),
                        num_cpus=lm.num_cpus)
    return ds


def _account(videos, errors, decoded, failures, staging, out, run_id) -> str:
    """Fills per-video frame/face counts and status from the ledger and the staged faces."""
    fs, _ = arrow_filesystem(out)
    files = [fs_and_path(u)[1] for u in _staged_faces(staging)]
    per_video: dict[str, tuple[int, set]] = {}
    detectors: set[str] = set()
    for f in files:
        t = pq.read_table(f, filesystem=fs, columns=["video_id", "frame_index", "detector"])
        detectors.update(t.column("detector").unique().to_pylist())
        for vid, idx in zip(t.column("video_id").to_pylist(), t.column("frame_index").to_pylist()):
            n, frames = per_video.setdefault(vid, (0, set()))
            frames.add(idx)
            per_video[vid] = (n + 1, frames)
    seg_errors: dict[str, list[str]] = {}
    for (vid, seg), (n, err) in sorted(decoded.items()):
        videos[vid]["frames_decoded"] += n
        if err is not None:
            kind, msg = err
            seg_errors.setdefault(vid, []).append(msg)
            errors.append({"uri": videos[vid]["uri"], "video_id": vid, "stage": "decode", "type": kind,
                           "message": msg, "run_id": run_id})
    for (vid, idx, stage), (kind, msg) in sorted(failures.items()):
        seg_errors.setdefault(vid, []).append(f"frame {idx}: {msg}")
        errors.append({"uri": videos[vid]["uri"], "video_id": vid, "stage": stage, "type": kind,
                       "message": msg, "frame_index": idx, "run_id": run_id})
    for vid, row in videos.items():
        expected = row.pop("_expected", None)
        if row.get("status") == "error":
            continue
        n, frames = per_video.get(vid, (0, set()))
        row["faces"], row["frames_with_faces"] = n, len(frames)
        if vid not in seg_errors and expected is not None and row["frames_decoded"] < expected:
            msg = f"decoded {row['frames_decoded']} of {expected} frames the container declares (truncated?)"
            seg_errors[vid] = [msg]
            errors.append({"uri": row["uri"], "video_id": vid, "stage": "decode", "type": "Truncated",
                           "message": msg, "run_id": run_id})
        if vid in seg_errors:
            row["status"] = "partial" if row["frames_decoded"] else "error"
            row["error"] = seg_errors[vid][0]
        else:
            row["status"] = "ok" if n else "no_faces"
    return ",".join(sorted(detectors))
