"""Extraction benchmark: the Ray pipeline against a plain single-process loop, side by side in one run.

Prints three things, measured on the same clips with the same ``ExtractConfig``:

1. Throughput (frames/s) of a plain loop in this process, without Ray, over the very functions the
   pipeline runs (decode_range → detector.detect → landmarker + IdentityEmbedder → face_rows →
   table_from_rows + Parquet write), against ``dflray.extract.run_extract`` on a local 2-CPU Ray cluster,
   and their ratio.
2. Where the loop's time goes, stage by stage, in ms/frame and % of the total.
3. Peak memory (RSS) of every Ray worker process, by kind, while the pipeline extracts a long generated
   1080p clip and a short clip cut from the same motion: per-worker memory should not grow with length.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/extract.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from itertools import islice

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from dflray.config import ExtractConfig, load_config  # noqa: E402
from dflray.detect import build_detector, build_landmarker  # noqa: E402
from dflray.detect.dlib_models import IdentityEmbedder  # noqa: E402
from dflray.extract.stages import face_rows  # noqa: E402
from dflray.io import schema  # noqa: E402
from dflray.io.video import decode_range, probe  # noqa: E402
from dflray.sample import make_sample  # noqa: E402

MEDIA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "media")
MEDIA_CLIPS = ("src_man_a.mp4", "dst_man_glasses_b.mp4")
STAGES = ("decode", "detect", "landmarks", "embedding", "align+mask+pose+encode", "write")
RAY_CPUS = 2

# Ray-side overrides for part [1] (--ray-set replaces them). Empty: the config defaults, which are
# the settings this benchmark measured best on 2 CPUs (fused detect+face actors, batch 16).
TUNED: tuple[str, ...] = ()


def say(*a) -> None:
    print(*a, flush=True)


def quiet_ray(num_cpus: int, *ignore_warnings: str) -> None:
    """A local Ray cluster of ``num_cpus`` that keeps the benchmark's output readable: no dashboard, no
    worker logs or progress bars, Ray's and dflray's loggers at ERROR, and the given warnings ignored."""
    import ray.data

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "dflray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in ("The minimum number of concurrent actors", *ignore_warnings):
        warnings.filterwarnings("ignore", message=message)


# ------------------------------------------------------------------------------------------------
# the plain loop


@dataclasses.dataclass
class LoopResult:
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    stage: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    load: str = ""
    mon: object = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def library_threads(single: bool):
    """Pins OpenCV and onnxruntime (which reads OMP_NUM_THREADS when its session is made) to one thread."""
    if not single:
        yield
        return
    old_env, old_cv = os.environ.get("OMP_NUM_THREADS"), cv2.getNumThreads()
    os.environ["OMP_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(old_cv)
        if old_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_env


def run_loop(uris: list[str], cfg: ExtractConfig, out_dir: str, warm_frame: np.ndarray) -> LoopResult:
    """Extracts ``uris`` in this process, one stage after another, timing each stage."""
    from dflray.faceset import video_id

    res = LoopResult()
    t0 = time.perf_counter()
    detector = build_detector(cfg.detect)
    landmarker = build_landmarker(cfg.landmarks)
    embedder = IdentityEmbedder() if cfg.landmarks.embedding else None
    # Warm up (first-call allocations, onnxruntime's arena) outside the timed part.
    dets = detector.detect([warm_frame] * min(cfg.detect.batch_size, 2))[0]
    if len(dets):
        lms = landmarker.landmarks(warm_frame, dets.boxes, dets.points5)
        if embedder is not None:
            embedder.embed(warm_frame, lms)
    res.load_seconds = time.perf_counter() - t0

    os.makedirs(out_dir, exist_ok=True)
    st = res.stage
    clock = time.perf_counter
    mon = Monitor(interval=0.5).__enter__()
    start = clock()
    for n, uri in enumerate(uris):
        info = probe(uri)
        vid = video_id(uri)
        frames = decode_range(uri, 0, cfg.decode.max_frames, cfg.decode.every_n, cfg.decode.threads)
        rows = []
        while True:
            t = clock()
            batch = list(islice(frames, cfg.detect.batch_size))
            st["decode"] += clock() - t
            if not batch:
                break
            res.frames += len(batch)
            t = clock()
            found = detector.detect([f for _, f in batch])
            st["detect"] += clock() - t
            for (idx, frame), d in zip(batch, found):
                if not len(d):
                    continue
                t1 = clock()
                lms = landmarker.landmarks(frame, d.boxes, d.points5)
                t2 = clock()
                emb = embedder.embed(frame, lms) if embedder is not None else None
                t3 = clock()
                keys = {"video_id": vid, "frame_index": idx, "source_uri": uri, "frame_width": int(frame.shape[1]),
                        "frame_height": int(frame.shape[0]), "timestamp": idx / info.fps if info.fps > 0 else None,
                        "detector": detector.spec.name, "landmarker": landmarker.spec.name}
                rows += face_rows(frame, d, lms, emb, cfg.align, keys)
                t4 = clock()
                st["landmarks"] += t2 - t1
                st["embedding"] += t3 - t2
                st["align+mask+pose+encode"] += t4 - t3
        t = clock()
        pq.write_table(schema.table_from_rows("faces", rows), os.path.join(out_dir, f"{n:04d}-{vid}.parquet"))
        st["write"] += clock() - t
        res.faces += len(rows)
    res.seconds = clock() - start
    mon.__exit__(None, None, None)
    res.load, res.mon = mon.load(), mon
    return res


# ------------------------------------------------------------------------------------------------
# the Ray pipeline


def run_ray(uris: list[str], cfg: ExtractConfig, out: str, poll: float = 1.0):
    from dflray.extract import run_extract

    shutil.rmtree(out, ignore_errors=True)
    wait_for_actors_to_exit()
    with Monitor(interval=poll) as mon:
        t0 = time.perf_counter()
        summary = run_extract(uris, out, cfg)
        secs = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return summary, secs, mon


class Monitor:
    """Polls, in a thread, the processes of this benchmark and of the machine while a measurement runs.

    - Peak RSS of every Ray worker process (title ``ray::…``), by kind (the title names the task or actor).
    - CPU used by this process and its descendants (the local Ray cluster's workers are) against all CPU
      used on the machine, so load from other programs during a measurement can be reported: this
      machine may be shared, and timings are only comparable when that load is near zero.
    """

    KINDS = (("SegmentStage", "fused decode+detect+face actor"), ("DetectFaceStage", "fused detect+face actor"),
             ("DetectStage", "DetectStage actor"),
             ("FaceStage", "FaceStage actor"),
             ("decode_segment", "decode task"), ("Write", "Parquet write task"), ("IDLE", "idle pooled worker"),
             ("DashboardAgent", "Ray node agents"), ("RuntimeEnvAgent", "Ray node agents"))

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak: dict[tuple[str, int], tuple[int, int]] = {}  # (kind, pid) -> (rss, rss - shared)
        self._cpu: dict[int, float] = {}  # own descendant pid -> last seen CPU seconds
        self._first: dict[int, float] = {}
        self._own_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._me = psutil.Process()

    def kind(self, title: str) -> str:
        for key, name in self.KINDS:
            if key in title:
                return name
        return "other Ray actors and tasks"

    def _sample(self) -> None:
        for c in self._me.children(recursive=True):
            try:
                t = c.cpu_times()
                self._cpu[c.pid] = t.user + t.system
                if c.pid not in self._first:
                    # Started during the measurement: count from 0; else from its first reading.
                    self._first[c.pid] = 0.0 if c.create_time() > self._t0 else t.user + t.system
                title = " ".join(c.cmdline())
                if not title.startswith("ray::"):
                    continue
                m = c.memory_info()
            except psutil.Error:
                continue
            key = (self.kind(title), c.pid)
            rss, priv = self.peak.get(key, (0, 0))
            self.peak[key] = (max(rss, m.rss), max(priv, m.rss - m.shared))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def __enter__(self) -> "Monitor":
        self._t0 = time.time()
        self._wall0, self._busy0 = time.perf_counter(), self._busy()
        t = self._me.cpu_times()
        self._self0 = t.user + t.system
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        t = self._me.cpu_times()
        self.wall = time.perf_counter() - self._wall0
        self.busy = self._busy() - self._busy0
        self.own = t.user + t.system - self._self0 + sum(self._cpu[p] - self._first[p] for p in self._cpu)
        self.other = max(0.0, self.busy - self.own)

    def load(self) -> str:
        """One line: cores used by the benchmark and by everything else during the measurement."""
        w = self.wall or 1.0
        return (f"CPU: benchmark {self.own / w:.2f} cores, other programs on the machine {self.other / w:.2f} cores"
                + ("  <- the machine was shared: timings are noisy" if self.other / w > 0.2 else ""))

    def by_kind(self) -> dict[str, tuple[int, int, int]]:
        """kind -> (processes, max peak RSS, max peak private RSS) in bytes."""
        out: dict[str, list[int]] = {}
        for (kind, _), (rss, priv) in self.peak.items():
            n, r, p = out.get(kind, [0, 0, 0])
            out[kind] = [n + 1, max(r, rss), max(p, priv)]
        return {k: tuple(v) for k, v in out.items()}


def wait_for_actors_to_exit(timeout: float = 15.0) -> None:
    """Ray kills a dataset's actors asynchronously; wait so one run's actors are not counted in the next."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [c for c in psutil.Process().children(recursive=True)
                 if any(k in " ".join(_cmdline(c)) for k in ("DetectStage", "FaceStage"))]
        if not alive:
            return
        time.sleep(0.2)


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


# ------------------------------------------------------------------------------------------------
# output


def table(headers: list[str], rows: list[list], aligns: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligns = aligns or "<" + ">" * (len(headers) - 1)
    fmt = lambda r: "  ".join(c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(r, widths, aligns))  # noqa: E731
    return "\n".join(["  " + fmt(cells[0]), "  " + "  ".join("-" * w for w in widths)] + ["  " + fmt(r) for r in cells[1:]])


def mib(b: int) -> str:
    return f"{b / 2**20:.0f}"


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s sample clips, first 48 frames of media clips, "
                    "no pinned loop or sweep, 6 s/2 s memory clips")
    ap.add_argument("--detector", default="auto", help="detect.detector (default auto: RetinaFace, else dlib-hog)")
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the long 1080p clip (default 120)")
    ap.add_argument("--short-seconds", type=float, default=20.0, help="length of the short 1080p clip (default 20)")
    ap.add_argument("--memory-every-n", type=int, default=10, help="decode.every_n for the memory runs (default 10)")
    ap.add_argument("--skip-memory", action="store_true", help="skip part 3 (long-video memory)")
    ap.add_argument("--no-pinned", action="store_true", help="skip the loop variant pinned to single-threaded libraries")
    ap.add_argument("--sweep", action="store_true", help="also time extra Ray settings (config defaults and variants)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="ExtractConfig override for both sides (repeatable), e.g. --set align.size=256")
    ap.add_argument("--ray-set", action="append", default=None, metavar="KEY=VALUE",
                    help="Ray-only overrides replacing the tuned settings (repeatable); --ray-set= for config defaults")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where generated clips are kept between runs")
    args = ap.parse_args(argv)

    run_in_workdir("dflray-bench-", _main, args)


def run_in_workdir(prefix: str, body, args) -> None:
    """Runs ``body(args, work)`` in a fresh temporary folder, removed afterwards with any Ray started."""
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    work = tempfile.mkdtemp(prefix=prefix)
    t_all = time.perf_counter()
    try:
        body(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if ray.is_initialized():
            ray.shutdown()
    say(f"\ntotal benchmark time {time.perf_counter() - t_all:.0f} s")


def _main(args, work: str) -> None:
    base = [f"detect.detector={args.detector}", *args.set]
    if args.quick:
        base.append("decode.max_frames=48")
    cfg = load_config(ExtractConfig, overrides=base)
    ray_overrides = TUNED if args.ray_set is None else tuple(o for o in args.ray_set if o)
    ray_cfg = load_config(ExtractConfig, overrides=base + list(ray_overrides))

    say("dflray extraction benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, ray {ray.__version__}")
    detector = build_detector(cfg.detect)
    det_name = detector.spec.name
    del detector
    if args.detector == "auto" and det_name != "retinaface":
        say("  NOTE: detector=auto could not load RetinaFace; using dlib-hog")
    say(f"  detector: {det_name} (input {cfg.detect.input_size}), landmarker: {cfg.landmarks.landmarker}, "
        f"embedding: {cfg.landmarks.embedding}, crops: {cfg.align.face_type} {cfg.align.size}px {cfg.align.image_format}")

    # ---- clips
    sample_dir = os.path.join(args.cache_dir, "sample-1s" if args.quick else "sample-4s")
    uris = make_sample(sample_dir, seconds=1.0 if args.quick else 4.0)
    for name in MEDIA_CLIPS:
        path = os.path.normpath(os.path.join(MEDIA, name))
        if os.path.exists(path):
            uris.append(path)
        else:
            say(f"  NOTE: {path} not found; skipping it")
    say("  clips:")
    total_frames = 0
    for u in uris:
        i = probe(u)
        n = min(i.frame_count, cfg.decode.max_frames or i.frame_count)
        total_frames += n
        say(f"    {os.path.basename(u):24s} {i.width}x{i.height} {i.fps:.0f} fps, {n} frames")
    say(f"    total {total_frames} frames")
    warm = next(decode_range(uris[0]))[1]

    # ---- part 1: the plain loop
    say("\n[1] throughput: plain single-process loop vs Ray pipeline (same clips, same ExtractConfig)")
    say(f"  loop: this process, no Ray, one stage after another; library threads at their defaults (OpenCV "
        f"{cv2.getNumThreads()} threads, onnxruntime intra-op = "
        f"{os.environ.get('OMP_NUM_THREADS') or 'one per physical core'}; dlib is single-threaded; PyAV "
        f"decode.threads={cfg.decode.threads}); models loaded and warmed up before the clock starts")
    loop = run_loop(uris, cfg, os.path.join(work, "loop"), warm)
    say(f"    {loop.frames} frames, {loop.faces} faces in {loop.seconds:.1f} s = {loop.fps:.2f} frames/s "
        f"(model load + warm-up {loop.load_seconds:.1f} s, not counted)")
    say(f"    {loop.load}")
    pinned = None
    if not args.quick and not args.no_pinned:
        say("  loop, pinned: the same loop with OpenCV and onnxruntime pinned to 1 thread (strictly one core)")
        with library_threads(single=True):
            pinned = run_loop(uris, cfg, os.path.join(work, "loop1"), warm)
        say(f"    {pinned.frames} frames, {pinned.faces} faces in {pinned.seconds:.1f} s = {pinned.fps:.2f} frames/s")
        say(f"    {pinned.load}")

    # ---- Ray
    t = time.perf_counter()
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data"):  # Ray Data's per-dataset INFO lines and deprecation notes drown the figures
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
    ray.data.DataContext.get_current().print_on_execution_start = False
    say(f"  Ray: local cluster ray.init(num_cpus={RAY_CPUS}) started in {time.perf_counter() - t:.1f} s (not counted); "
        f"the clock covers all of run_extract: probe, actor start and model load, decode → write, commit")
    say(f"    settings: {' '.join(ray_overrides) or '(config defaults)'}")
    runs = []
    for attempt in ("1st", "2nd")[: 1 if args.quick else 2]:
        s, secs, mon = run_ray(uris, ray_cfg, os.path.join(work, "ray"))
        runs.append((attempt, s, secs, mon))
        say(f"    run {attempt}: {s.frames} frames, {s.faces} faces in {secs:.1f} s = {s.frames / secs:.2f} frames/s")
        say(f"      {mon.load()}")
    if runs[0][1].faces != loop.faces or runs[0][1].frames != loop.frames:
        say(f"    NOTE: loop and Ray differ: frames {loop.frames} vs {runs[0][1].frames}, "
            f"faces {loop.faces} vs {runs[0][1].faces}")
    ray_fps = statistics.mean(s.frames / secs for _, s, secs, _ in runs)

    say("\n  summary (frames/s; ratio to the loop with default threads; the issue's target on 2 cores: Ray >= 1.6x)")
    def row(label, frames, secs, mon):
        return [label, f"{frames / secs:.2f}", f"{frames / secs / loop.fps:.2f}x", f"{mon.own / mon.wall:.2f}",
                f"{1000 * mon.own / frames:.0f}", f"{mon.other / mon.wall:.2f}"]

    rows = [row("loop, default library threads", loop.frames, loop.seconds, loop.mon)]
    if pinned is not None:
        rows.append(row("loop, libraries pinned to 1 thread", pinned.frames, pinned.seconds, pinned.mon))
    for attempt, s, secs, mon in runs:
        rows.append(row(f"Ray, 2 CPUs, run {attempt}", s.frames, secs, mon))
    say(table(["", "frames/s", "vs loop", "cores used", "CPU ms/frame", "other load (cores)"], rows))
    say(f"  => Ray / loop = {ray_fps / loop.fps:.2f}x"
        + (f"   (Ray / pinned loop = {ray_fps / pinned.fps:.2f}x)" if pinned else "")
        + f"   [Ray: mean of {len(runs)} run(s)]")
    say("  cores used / CPU ms per frame: CPU time of this process and its children (the Ray cluster's workers,\n"
        "  raylet, GCS) over wall time / frames; other load: cores used by other programs during the run.")

    if args.sweep:
        sweep(uris, base, loop, work)

    # ---- part 2
    say("\n[2] where the loop's time goes (default library threads), per decoded frame")
    rows = []
    for name in STAGES:
        v = loop.stage[name]
        rows.append([name, f"{1000 * v / loop.frames:.1f}", f"{100 * v / loop.seconds:.1f}%"])
    other = loop.seconds - sum(loop.stage.values())
    rows.append(["other (probe, loop)", f"{1000 * other / loop.frames:.1f}", f"{100 * other / loop.seconds:.1f}%"])
    rows.append(["total", f"{1000 * loop.seconds / loop.frames:.1f}", "100.0%"])
    say(table(["stage", "ms/frame", "share"], rows))
    say(f"  {loop.faces / max(loop.frames, 1):.2f} faces per frame: landmarks, embedding and align run per face, "
        f"detect per batch of {cfg.detect.batch_size} frames, write per clip")

    # ---- part 3
    if not args.skip_memory:
        memory(args, base + list(ray_overrides))
    ray.shutdown()


# Ray settings compared by --sweep: CPUs reserved per decode task / detector actor / face actor, actor
# counts and batch sizes. Reservations must leave room for a decode task (<= 2 CPUs in all).
SWEEP = {
    "config defaults (fused, batch 16)": (),
    "fused, batch 8": ("landmarks.batch_size=8",),
    "fused, 3 actors x 0.5 CPU": ("landmarks.concurrency=3", "landmarks.num_cpus=0.5"),
    "split: 1 detect + 2 face actors": ("stages=split",),
    "split: 2 detect + 2 face actors": ("stages=split", "detect.concurrency=2", "landmarks.num_cpus=0.5"),
}


def sweep(uris, base, loop, work) -> None:
    say("\n  sweep: Ray settings, one run each on the warm cluster (frames/s; ratio to the default-thread loop)")
    rows = []
    for label, ov in SWEEP.items():
        cfg = load_config(ExtractConfig, overrides=base + list(ov))
        s, secs, mon = run_ray(uris, cfg, os.path.join(work, "sweep"))
        other = mon.other / mon.wall
        rows.append([label, f"{s.frames / secs:.2f}", f"{s.frames / secs / loop.fps:.2f}x", f"{other:.2f}",
                     " ".join(ov) or "-"])
        say(f"    {label}: {s.frames / secs:.2f} frames/s ({mon.load()})")
    say(table(["setting", "frames/s", "vs loop", "other load", "overrides"], rows, "<>>><"))


def memory(args, overrides: list[str]) -> None:
    from _longvideo import long_video

    long_s, short_s = (6.0, 2.0) if args.quick else (args.seconds, args.short_seconds)
    every = args.memory_every_n
    ov = [o for o in overrides if not o.startswith("decode.max_frames")] + [f"decode.every_n={every}"]
    cfg = load_config(ExtractConfig, overrides=ov)
    say(f"\n[3] peak memory per Ray worker: 1080p H.264 clip of {long_s:g} s vs {short_s:g} s (the same motion, "
        f"so the short clip is the long one's start)")
    say(f"  decode.every_n={every}: every frame is decoded, every {every}th goes on to detection; "
        f"embedding={cfg.landmarks.embedding}; decode segments of {cfg.decode.segment_frames} frames; "
        f"same Ray settings as [1]; each 'ray::' process's RSS polled every 0.1 s")
    clips = [(f"{short_s:g} s", long_video(args.cache_dir, short_s, log=say)),
             (f"{long_s:g} s", long_video(args.cache_dir, long_s, log=say))]
    out = os.path.join(tempfile.gettempdir(), f"dflray-bench-mem-{os.getpid()}")
    results = {}
    for label, path in clips:
        info = probe(path)
        s, secs, mon = run_ray([path], cfg, out, poll=0.1)
        results[label] = mon.by_kind()
        say(f"  {label}: {info.frame_count} frames decoded ({s.frames} kept), {s.faces} faces, {secs:.1f} s = "
            f"{info.frame_count / secs:.1f} decoded frames/s; driver RSS {mib(psutil.Process().memory_info().rss)} MiB")
        say(f"    {mon.load()}")
    kinds = [k for k, _ in Monitor.KINDS] + ["other Ray actors and tasks"]
    names = list(dict.fromkeys(Monitor(0).kind(k) for k in kinds[:-1])) + [kinds[-1]]
    headers = ["worker kind"]
    for label in results:
        headers += [f"{label}: procs", "peak RSS MiB", "private MiB"]
    rows = []
    for k in names:
        if not any(k in r for r in results.values()):
            continue
        row = [k]
        for r in results.values():
            n, rss, priv = r.get(k, (0, 0, 0))
            row += [n, mib(rss), mib(priv)]
        rows.append(row)
    say(table(headers, rows))
    say("  peak RSS: the highest resident set seen in any one process of that kind; private: RSS minus shared pages\n"
        "  (shared: file-backed pages and the Ray object store's shared memory the process has touched). Ray reuses\n"
        "  pooled worker processes for tasks, so a decode task's process may also have run other tasks before.")


if __name__ == "__main__":
    main()
