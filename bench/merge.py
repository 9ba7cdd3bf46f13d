"""Merge benchmark: the full merge against a decode + encode floor, side by side in one run.

Prints, measured on the same dst clip with the same ``MergeConfig`` and a 128 px swap model (untrained:
weights do not change the speed):

1. Throughput (frames/s) of the floor, a ``Transcoder`` loop that decodes every frame and encodes it
   unchanged (and a mask video) with the merge's encoder settings; of the full merge in this process
   (``merge_video`` with ``InlinePredict``); and of ``run_merge`` on a local 2-CPU Ray cluster, with
   each merge's ratio to the floor (the issue's target: >= 1/3 of the floor).
2. Where the in-process merge's time goes: decode, crop, model, paste, encode, per-frame table.
3. The per-video overhead of ``run_merge`` over many short videos (copies of a short cut of the clip)
   against the per-frame rate of the long clip (the issue's target: <= 0.2 s per video).

This is a benchmark, not a test: nothing is asserted. Run ``python bench/merge.py --help``; see
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
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from extract import Monitor, run_in_workdir, say, table  # noqa: E402  (bench/extract.py: the CPU-load monitor and table)

import dflray.merge.video as merge_mod  # noqa: E402
from dflray.config import ExtractConfig, MergeConfig, ModelConfig, load_config  # noqa: E402
from dflray.faceset import read_faces  # noqa: E402
from dflray.io import schema  # noqa: E402
from dflray.io.storage import expand_inputs  # noqa: E402
from dflray.io.video import Transcoder, probe  # noqa: E402
from dflray.merge.predict import Predictor  # noqa: E402
from dflray.merge.video import InlinePredict, merge_video, plan_faces, select_faces, video_seed  # noqa: E402
from dflray.models import build_model, count_parameters  # noqa: E402
from dflray.sample import make_sample  # noqa: E402

MEDIA_CLIP = os.path.normpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                                           "shared", "media", "woman_room_audio_e.mp4"))
RAY_CPUS = 2
SAEHD_DIMS = (256, 64, 64, 22)  # ae_dims, e_dims, d_dims, d_mask_dims: DFL's SAEHD defaults
SHORT_FRAMES = 5  # frames of each short video of part [3]
STAGES = ("decode (+ audio copy)", "crop (prepare_crop)", "model", "paste", "encode (video + mask)",
          "frame row (mask bbox)")


# ------------------------------------------------------------------------------------------------
# inputs: clip, model, facesets


def cut(src: str, dst: str, frames: int, crf: int = 18, preset: str = "medium") -> str:
    """The first ``frames`` frames of ``src`` (audio kept up to there), re-encoded by a Transcoder."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with Transcoder(src, dst, crf=crf, preset=preset) as tr:
        n = 0
        for f in tr.frames():
            if n >= frames:
                break
            tr.write(f, f.rgb)
            n += 1
    return dst


def make_model(work: str, resolution: int, dims: tuple[int, int, int, int]) -> tuple[str, ModelConfig]:
    """An untrained liae-ud model of this size, checkpointed and exported to TorchScript."""
    ae, e, d, mk = dims
    mc = ModelConfig(resolution=resolution, face_type="whole_face", ae_dims=ae, e_dims=e, d_dims=d, d_mask_dims=mk)
    return export_untrained(work, mc), mc


def export_untrained(work: str, mc: ModelConfig) -> str:
    """An untrained model of ``mc`` (any arch), checkpointed and exported to TorchScript by the project's code."""
    from dflray.artifacts.checkpoint import FORMAT, save_payload
    from dflray.artifacts.export import export_model

    torch.manual_seed(0)
    m = build_model(mc)
    ckpt = os.path.join(work, "ckpt")
    os.makedirs(ckpt, exist_ok=True)
    save_payload(ckpt, {"format": FORMAT, "step": 0, "model_config": dataclasses.asdict(mc), "model": m.state_dict(),
                        "run_config": {}})
    path = os.path.join(work, "model.ts")
    export_model(ckpt, path)
    return path


def copies_faceset(one: str, out: str, uris: list[str]) -> int:
    """A faceset for ``uris`` (copies of one video) from the faceset of the first: the same face rows under
    each copy's video id and URI, one faces file per video (as extraction writes one per segment), one
    videos table. Returns the number of face rows written."""
    from dflray.faceset import committed_face_files, read_videos, video_id

    os.makedirs(os.path.join(out, "faces"), exist_ok=True)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    shutil.copy(os.path.join(one, "faceset.json"), os.path.join(out, "faceset.json"))
    faces = schema.read_table("faces", committed_face_files(one))
    video = read_videos(one).to_pylist()[0]
    run_id = video["run_id"]
    rows, n = [], 0
    for i, uri in enumerate(uris):
        vid = video_id(uri)
        t = faces.set_column(faces.schema.get_field_index("video_id"), "video_id",
                             pa.array([vid] * faces.num_rows, pa.string()))
        t = t.set_column(t.schema.get_field_index("source_uri"), "source_uri", pa.array([uri] * t.num_rows, pa.string()))
        pq.write_table(t, os.path.join(out, "faces", f"{run_id}-{i:06d}.parquet"))
        n += t.num_rows
        rows.append({**video, "video_id": vid, "uri": uri})
    pq.write_table(schema.table_from_rows("videos", rows), os.path.join(out, "videos", f"{run_id}.parquet"))
    return n


def extract(uri: str, out: str):
    from dflray.extract import run_extract

    s = run_extract([uri], out, load_config(ExtractConfig, overrides=["align.size=128"]))
    if s.faces == 0:
        raise SystemExit(f"no face was found in {uri}: the merge would have nothing to swap")
    return s


# ------------------------------------------------------------------------------------------------
# the floor and the in-process merge, timed stage by stage


class Stopwatch:
    def __init__(self):
        self.stage = dict.fromkeys(STAGES, 0.0)


class TimedTranscoder(Transcoder):
    """A Transcoder that adds the time spent decoding (each ``next`` of ``frames()``) and encoding
    (``write`` and the final flush in ``close``) to a Stopwatch."""

    def __init__(self, *a, watch: Stopwatch, **kw):
        self.watch = watch
        super().__init__(*a, **kw)

    def frames(self):
        it = super().frames()
        clock, st = time.perf_counter, self.watch.stage
        while True:
            t = clock()
            try:
                f = next(it)
            except StopIteration:
                st["decode (+ audio copy)"] += clock() - t
                return
            st["decode (+ audio copy)"] += clock() - t
            yield f

    def write(self, frame, rgb, mask=None):
        t = time.perf_counter()
        super().write(frame, rgb, mask)
        self.watch.stage["encode (video + mask)"] += time.perf_counter() - t

    def close(self):
        t = time.perf_counter()
        super().close()
        self.watch.stage["encode (video + mask)"] += time.perf_counter() - t


class TimedPredict(InlinePredict):
    def __init__(self, predictor, batch_size: int, watch: Stopwatch):
        super().__init__(predictor, batch_size)
        self.watch, self.faces, self.calls = watch, 0, 0

    def submit(self, crops):
        t = time.perf_counter()
        out = super().submit(crops)
        self.watch.stage["model"] += time.perf_counter() - t
        self.faces += len(crops)
        self.calls += 1
        return out


@contextlib.contextmanager
def timed_merge_functions(watch: Stopwatch):
    """Wraps the per-face and per-frame functions ``merge_video`` calls (module globals of
    dflray.merge.video) with timers for the duration of the block."""
    names = {"prepare_crop": "crop (prepare_crop)", "paste": "paste", "_frame_row": "frame row (mask bbox)"}
    saved = {n: getattr(merge_mod, n) for n in names}

    def wrap(fn, stage):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                watch.stage[stage] += time.perf_counter() - t
        return timed

    for n, stage in names.items():
        setattr(merge_mod, n, wrap(saved[n], stage))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(merge_mod, n, fn)


@dataclasses.dataclass
class Timed:
    frames: int
    seconds: float
    mon: Monitor
    watch: Stopwatch | None = None
    faces: int = 0
    calls: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def floor(clip: str, out_dir: str, cfg: MergeConfig) -> Timed:
    """Decode + encode only: every frame written unchanged, an all-zero mask beside it."""
    o = cfg.output
    watch = Stopwatch()
    os.makedirs(out_dir, exist_ok=True)
    with Monitor(interval=0.5) as mon:
        t0 = time.perf_counter()
        n = 0
        with TimedTranscoder(clip, os.path.join(out_dir, "floor.mp4"),
                             mask_path=os.path.join(out_dir, "floor_mask.mp4") if o.masks else None, crf=o.crf,
                             preset=o.preset, lossless=o.lossless, mask_crf=o.mask_crf, watch=watch) as tr:
            for f in tr.frames():
                tr.write(f, f.rgb, None)
                n += 1
        secs = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    return Timed(n, secs, mon, watch)


def plan_for(faceset: str, cfg: MergeConfig):
    """The plan run_merge makes for the faceset's (only) video: identity choice, tracks, smoothing."""
    faces = read_faces(faceset, columns=["frame_index", "landmarks", "embedding"])
    frame_idx = np.asarray(faces.column("frame_index").to_numpy(), np.int64)
    emb = faces.column("embedding")
    embeddings = None
    if emb.null_count < faces.num_rows:
        flat = emb.combine_chunks().fill_null([np.nan] * 128) if emb.null_count else emb.combine_chunks()
        embeddings = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, 128).astype(np.float64)
    selected = select_faces(frame_idx, embeddings, cfg.identity.swap, threshold=cfg.identity.threshold)
    plan = plan_faces(frame_idx, schema.landmarks_of(faces), selected, smooth_window=cfg.smooth_window,
                      fill_gaps=cfg.fill_gaps or 0)
    counts = {int(k): int(v) for k, v in zip(*np.unique(frame_idx, return_counts=True))}
    return plan, counts


def inprocess(clip: str, model: str, faceset: str, cfg: MergeConfig, out_dir: str, device: str) -> Timed:
    """merge_video in this process with the model inline, as run_merge's worker runs it per video."""
    from dflray.faceset import video_id

    predictor = Predictor.load(model, device, cfg.predict.precision)
    r, ft = predictor.resolution, predictor.face_type
    for _ in range(3):  # TorchScript's profiling executor optimises after the first calls of a shape
        predictor(np.zeros((min(cfg.workers.batch_frames, cfg.predict.batch_size), r, r, 3), np.float32))
    plan, counts = plan_for(faceset, cfg)
    watch = Stopwatch()
    predict = TimedPredict(predictor, cfg.predict.batch_size, watch)
    o = cfg.output
    os.makedirs(out_dir, exist_ok=True)
    with Monitor(interval=0.5) as mon, timed_merge_functions(watch):
        t0 = time.perf_counter()
        with TimedTranscoder(clip, os.path.join(out_dir, "merged.mp4"),
                             mask_path=os.path.join(out_dir, "mask.mp4") if o.masks else None, crf=o.crf,
                             preset=o.preset, lossless=o.lossless, mask_crf=o.mask_crf, watch=watch) as tr:
            rows = merge_video(tr, plan, predict, cfg.settings, face_type=ft, resolution=r,
                               seed=video_seed(cfg.seed, video_id(clip)), batch_frames=cfg.workers.batch_frames,
                               faces_per_frame=counts)
        secs = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    return Timed(len(rows), secs, mon, watch, faces=predict.faces, calls=predict.calls)


class FreeModel:
    """A stand-in for the model that costs nothing: the crop back as the face, full masks."""

    def __init__(self, resolution: int, face_type: str):
        self.resolution, self.face_type = resolution, face_type

    def __call__(self, crops):
        n, r = len(crops), self.resolution
        return np.asarray(crops, np.float32), np.ones((n, r, r), np.float32), np.ones((n, r, r), np.float32)


@dataclasses.dataclass
class FixedCost:
    videos: int
    per_video: float  # mean seconds of merge_one per short video, model free
    read_faces: float  # mean seconds of _read_faces for one video


def fixed_cost(faceset: str, model: str, cfg: MergeConfig, work: str, videos: int = 10) -> FixedCost:
    """merge_one (run_merge's per-video function: faceset read, plan, merge_video, publish, tables, record)
    in this process on the first short videos, with the model stubbed out, and _read_faces alone."""
    from dflray.merge.pipeline import _read_faces, _tasks, merge_one

    contract = Predictor.load(model, "cpu").contract
    tasks = _tasks(faceset, [faceset], cfg, "0" * 64, model)[:videos]
    for t in tasks:
        t["seed"] = video_seed(cfg.seed, t["dst_video_id"])
    predict = InlinePredict(FreeModel(contract.resolution, contract.face_type), cfg.predict.batch_size)
    out = os.path.join(work, "fixed")
    kw = dict(contract=contract, model_uri=model, model_sha="0" * 64, reference=None, run_id="bench",
              dataset_id="bench")
    merge_one(tasks[0], cfg, out, predict, **kw)  # warm-up (imports, first allocations)
    times = []
    for t in tasks:
        t0 = time.perf_counter()
        record, error = merge_one(t, cfg, out, predict, **kw)
        times.append(time.perf_counter() - t0)
        if error is not None:
            say(f"    NOTE: merge_one failed: {record.get('error')}")
    reads = []
    for t in tasks:
        t0 = time.perf_counter()
        _read_faces(t)
        reads.append(time.perf_counter() - t0)
    shutil.rmtree(out, ignore_errors=True)
    return FixedCost(len(tasks), statistics.mean(times), statistics.mean(reads))


# ------------------------------------------------------------------------------------------------
# run_merge


@dataclasses.dataclass
class RayRun:
    summary: object
    seconds: float
    mon: Monitor
    records: list[dict]

    @property
    def video_seconds(self) -> float:
        return sum(r["seconds"] for r in self.records)

    @property
    def frames(self) -> int:
        return sum(r["frames"] or 0 for r in self.records)


def ray_merge(model: str, faceset: str, out: str, cfg: MergeConfig) -> RayRun:
    from dflray.merge.pipeline import run_merge

    shutil.rmtree(out, ignore_errors=True)
    wait_for_actors_to_exit()
    with Monitor(interval=1.0) as mon:
        t0 = time.perf_counter()
        summary = run_merge(model, [faceset], out, cfg)
        secs = time.perf_counter() - t0
    records = pq.read_table(os.path.join(out, "index.parquet"),
                            columns=["dst_uri", "status", "error", "frames", "seconds"]).to_pylist()
    bad = [r for r in records if r["status"] != "ok"]
    if bad or summary.failures:
        say(f"    NOTE: {len(bad)} video(s) failed, e.g. {bad[0]['dst_uri'] if bad else ''}: "
            f"{bad[0]['error'] if bad else summary.failures[0]}")
    shutil.rmtree(out, ignore_errors=True)
    return RayRun(summary, secs, mon, records)


def wait_for_actors_to_exit(timeout: float = 15.0) -> None:
    """Ray Data kills its actors asynchronously; wait so one run's actors do not hold CPUs in the next."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for c in psutil.Process().children(recursive=True):
            try:
                title = " ".join(c.cmdline())
            except psutil.Error:
                continue
            if "MergeStage" in title or "_PredictActor" in title:
                alive.append(c)
        if not alive:
            return
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: first 48 frames of the clip, 10 short videos")
    ap.add_argument("--clip", help="dst clip (default: ../shared/media/woman_room_audio_e.mp4 when present, "
                    "else the built-in astronaut sample, 8 s)")
    ap.add_argument("--frames", type=int, help="use only the clip's first N frames (a re-encoded cut)")
    ap.add_argument("--videos", type=int, default=100, help="short videos of part 3 (default 100; 0 skips part 3)")
    ap.add_argument("--short-frames", type=int, default=SHORT_FRAMES,
                    help=f"frames of each short video of part 3 (default {SHORT_FRAMES})")
    ap.add_argument("--resolution", type=int, default=128, help="model.resolution (default 128)")
    ap.add_argument("--dims", default=",".join(map(str, SAEHD_DIMS)),
                    help="ae,e,d,mask dims of the liae-ud model (default %(default)s, SAEHD's)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="the model's device (auto: CUDA when available; then run_merge gets predict.num_gpus=1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="MergeConfig override for every part (repeatable), e.g. --set settings.mode=seamless")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames = args.frames or 48
        args.videos = min(args.videos, 10)

    run_in_workdir("dflray-bench-merge-", _main, args)


def _quiet_ray() -> None:
    # address="local": a new cluster of our own even when a `ray start` cluster runs on this machine
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("dflray").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")


def _main(args, work: str) -> None:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = list(args.set)
    if device == "cuda" and not any(o.startswith("predict.num_gpus") for o in overrides):
        overrides.append("predict.num_gpus=1")
    cfg = load_config(MergeConfig, overrides=overrides)
    dims = tuple(int(x) for x in args.dims.split(","))

    say("dflray merge benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}; "
        f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")

    # ---- inputs
    t = time.perf_counter()
    model, mc = make_model(work, args.resolution, dims)
    c = count_parameters(build_model(mc))
    say(f"  model: {mc.arch_string} {mc.resolution} px {mc.face_type}, ae/e/d/mask dims {mc.ae_dims}/{mc.e_dims}/"
        f"{mc.d_dims}/{mc.d_mask_dims}, {c['total'] / 1e6:.1f} M parameters (untrained; exported to TorchScript), "
        f"on {device}")
    clip = args.clip
    if clip is None:
        if os.path.exists(MEDIA_CLIP):
            clip = MEDIA_CLIP
        else:
            say(f"  NOTE: {MEDIA_CLIP} not found; using the built-in sample")
            clip = make_sample(os.path.join(work, "sample"), seconds=8.0, names=("astronaut",))[0]
    source = clip
    if args.frames and args.frames < probe(clip).frame_count:
        clip = cut(source, os.path.join(work, "clip", f"first{args.frames}.mp4"), args.frames, cfg.output.crf)
    info = probe(clip)
    say(f"  clip: {os.path.basename(source)} {info.width}x{info.height} {info.fps:.0f} fps, {info.frame_count} frames"
        + (" (its first frames, re-encoded)" if clip != source else "") + f", audio: {'yes' if info.has_audio else 'no'}")
    s = cfg.settings
    say(f"  merge: mode={s.mode} mask_mode={s.mask_mode} color_transfer={s.color_transfer} identity={cfg.identity.swap}; "
        f"output crf={cfg.output.crf} preset={cfg.output.preset}, masks={cfg.output.masks} (mask_crf="
        f"{cfg.output.mask_crf}); workers.batch_frames={cfg.workers.batch_frames}, predict.batch_size="
        f"{cfg.predict.batch_size}" + (f"; overrides: {' '.join(overrides)}" if overrides else ""))

    # Short videos for [3]: copies of the clip's first frames, their faceset built from one extraction.
    n, k = args.videos, args.short_frames
    if n > 0:
        short_dir = os.path.join(work, "short")
        first = cut(clip, os.path.join(short_dir, "clip_0000.mp4"), k, cfg.output.crf)
        paths = [first] + [os.path.join(short_dir, f"clip_{i:04d}.mp4") for i in range(1, n)]
        for p in paths[1:]:
            shutil.copyfile(first, p)
        uris = expand_inputs(paths)

    t_ray = _start_ray()
    faceset = os.path.join(work, "faceset")
    ex = extract(clip, faceset)
    if n > 0:
        one, many = os.path.join(work, "short-faceset-1"), os.path.join(work, "short-faceset")
        ex1 = extract(uris[0], one)
        face_rows = copies_faceset(one, many, uris)
    ray.shutdown()
    say(f"  dst faceset: run_extract(align.size=128): {ex.faces} faces in {ex.frames} frames")
    if n > 0:
        say(f"  short videos for [3]: {n} file copies of the clip's first {k} frames; their faceset: the first copy "
            f"extracted ({ex1.faces} faces), its rows repeated under each copy's video id ({face_rows} face rows, one "
            f"faces file per video, as extraction writes one per segment)")
    say(f"  model, clips, facesets and a Ray start ({t_ray:.1f} s) took {time.perf_counter() - t:.0f} s (not counted)")

    # ---- [1] throughput
    say("\n[1] throughput on the same clip: decode + encode floor, merge in-process, run_merge on Ray")
    say("  floor: this process (no Ray running), a Transcoder loop writing every frame unchanged and an all-zero\n"
        "  mask with the merge's encoder settings; PyAV decode threads AUTO, x264 its own threads")
    f1 = floor(clip, os.path.join(work, "floor"), cfg)
    say(f"    1st: {f1.frames} frames in {f1.seconds:.1f} s = {f1.fps:.1f} frames/s;  {f1.mon.load()}")

    say(f"  merge in-process: merge_video + InlinePredict(Predictor.load(model, '{device}')), plan from the faceset\n"
        f"  (select_faces, plan_faces), torch {torch.get_num_threads()} threads; model loaded and warmed up first")
    m = inprocess(clip, model, faceset, cfg, os.path.join(work, "inproc"), device)
    model_s = m.watch.stage["model"]
    say(f"    {m.frames} frames, {m.faces} faces in {m.seconds:.1f} s = {m.fps:.2f} frames/s; model "
        f"{1000 * model_s / max(m.faces, 1):.0f} ms/face ({m.calls} calls);  {m.mon.load()}")

    t_ray = _start_ray()
    say(f"  run_merge: local ray.init(num_cpus={RAY_CPUS}) (started in {t_ray:.1f} s, not counted), the merge config "
        f"above:\n  {cfg.predict.concurrency} predictor actor x {cfg.predict.num_cpus:g} CPU (torch "
        f"{cfg.predict.threads or int(np.ceil(cfg.predict.num_cpus))} thread(s)), merge workers x "
        f"{cfg.workers.num_cpus:g} CPU on the rest; the clock covers all of run_merge")
    r = ray_merge(model, faceset, os.path.join(work, "ray-long"), cfg)
    rec = r.records[0]
    startup = r.seconds - r.video_seconds
    say(f"    {r.frames} frames in {r.seconds:.1f} s = {r.frames / r.seconds:.2f} frames/s; the video's own time "
        f"(its record's seconds) {rec['seconds']:.1f} s = {r.frames / rec['seconds']:.2f} frames/s; "
        f"the rest of run_merge (checks, actor start, Ray Data, index) {startup:.1f} s")
    say(f"      {r.mon.load()}")
    short = None
    if n > 0:
        say(f"  run_merge over the {n} short videos (for [3]), same cluster and config")
        short = ray_merge(model, many, os.path.join(work, "ray-short"), cfg)
        say(f"    {len(short.records)} videos ({sum(x['status'] == 'ok' for x in short.records)} ok), {short.frames} "
            f"frames in {short.seconds:.1f} s;  {short.mon.load()}")
    ray.shutdown()

    f2 = floor(clip, os.path.join(work, "floor"), cfg)
    say(f"  floor again, after the Ray runs: {f2.frames} frames in {f2.seconds:.1f} s = {f2.fps:.1f} frames/s;  "
        f"{f2.mon.load()}")
    floor_fps = statistics.mean([f1.fps, f2.fps])
    fixed = None
    if short is not None:
        fixed = fixed_cost(many, model, cfg, work)
        say(f"  merge_one in-process on {fixed.videos} of the short videos (for [3]), the model stubbed out: "
            f"{fixed.per_video:.3f} s per video")

    say("\n  summary (frames/s of the same clip; ratio to the floor, mean of its 2 runs; the issue's target: "
        "full merge >= 1/3 of the floor)")

    def row(label, frames, secs, mon):
        cores = f"{mon.own / mon.wall:.2f}" if mon else "-"
        cpu = f"{1000 * mon.own / frames:.0f}" if mon else "-"
        other = f"{mon.other / mon.wall:.2f}" if mon else "-"
        return [label, frames, f"{secs:.1f}", f"{frames / secs:.2f}", f"{frames / secs / floor_fps:.3f}", cores, cpu,
                other]

    no_model = m.seconds - model_s
    rows = [row("floor: decode + encode, 1st", f1.frames, f1.seconds, f1.mon),
            row("floor: decode + encode, 2nd", f2.frames, f2.seconds, f2.mon),
            row("merge in-process", m.frames, m.seconds, m.mon),
            row("  the same less the model's time", m.frames, no_model, None),
            row("run_merge, wall (job start-up included)", r.frames, r.seconds, r.mon),
            row("run_merge, the video's record seconds", r.frames, rec["seconds"], None)]
    say(table(["", "frames", "seconds", "frames/s", "vs floor", "cores used", "CPU ms/frame", "other load (cores)"],
              rows))
    say(f"  => merge / floor: in-process {m.fps / floor_fps:.3f}, run_merge {r.frames / r.seconds / floor_fps:.3f} "
        f"(record time {r.frames / rec['seconds'] / floor_fps:.3f}); target 0.333; without the model (as if it were "
        f"free) the in-process merge would be at {m.frames / no_model / floor_fps:.3f}")
    say("  cores used / CPU ms per frame: CPU time of this process and its children (the Ray cluster) over wall\n"
        "  time / frames; other load: cores used by other programs during the run.")

    # ---- [2] split
    say("\n[2] where the in-process merge's time goes, per frame (the floor's decode and encode beside it)")
    rows = []
    for name in STAGES:
        v = m.watch.stage[name]
        fv = f1.watch.stage[name]
        rows.append([name, f"{1000 * v / m.frames:.1f}", f"{100 * v / m.seconds:.1f}%",
                     f"{1000 * fv / f1.frames:.1f}" if fv else "-"])
    other = m.seconds - sum(m.watch.stage.values())
    rows.append(["other (open, batching, plan lookup)", f"{1000 * other / m.frames:.1f}",
                 f"{100 * other / m.seconds:.1f}%", f"{1000 * (f1.seconds - sum(f1.watch.stage.values())) / f1.frames:.1f}"])
    rows.append(["total", f"{1000 * m.seconds / m.frames:.1f}", "100.0%", f"{1000 * f1.seconds / f1.frames:.1f}"])
    say(table(["stage", "ms/frame", "share", "floor (1st) ms/frame"], rows))
    say(f"  {m.faces / max(m.frames, 1):.2f} swapped faces per frame; the model ran {m.calls} batches of up to "
        f"{cfg.predict.batch_size} crops ({cfg.workers.batch_frames} frames each), "
        f"{1000 * model_s / max(m.faces, 1):.0f} ms/face")

    if short is not None:
        per_video(n, k, r, short, fixed, m, cfg)


def _start_ray() -> float:
    """Starts the local cluster and lets its first worker processes come up; returns the seconds it took."""
    t = time.perf_counter()
    _quiet_ray()
    ray.get(ray.remote(num_cpus=0)(lambda: None).remote())
    time.sleep(2.0)  # the prestarted workers finish importing
    return time.perf_counter() - t


def per_video(n: int, k: int, long: RayRun, r: RayRun, fixed: FixedCost, m: Timed, cfg: MergeConfig) -> None:
    say(f"\n[3] per-video overhead: run_merge over {n} short videos ({k} frames each) against the long clip's "
        f"per-frame rate")
    rec_long = long.records[0]
    if rec_long["status"] != "ok":
        say("  NOTE: the long clip's merge failed; no reference rate")
        return
    fps_long = long.frames / rec_long["seconds"]
    frames = r.frames
    overhead = (r.seconds - frames / fps_long) / n
    startup = long.seconds - long.video_seconds  # run_merge's own time around one video
    in_worker = r.video_seconds / n - k / fps_long
    between = (r.seconds - r.video_seconds - startup) / n
    say(f"  records' seconds of the short videos: mean {r.video_seconds / n:.2f} s, median "
        f"{statistics.median(x['seconds'] for x in r.records):.2f} s, max {max(x['seconds'] for x in r.records):.2f} s")
    say(table(["", "videos", "frames", "seconds", "frames/s"], [
        [f"run_merge over {n} short videos (wall)", n, frames, f"{r.seconds:.1f}", f"{frames / r.seconds:.2f}"],
        ["long clip, its record seconds ([1])", 1, long.frames, f"{rec_long['seconds']:.1f}", f"{fps_long:.2f}"],
        [f"{frames} frames at the long clip's rate", "-", frames, f"{frames / fps_long:.1f}", f"{fps_long:.2f}"]]))
    say(f"  => per-video overhead = ({r.seconds:.1f} - {frames} / {fps_long:.2f}) / {n} = {overhead:.3f} s "
        f"(target <= 0.2 s)")
    p = cfg.predict
    # as run_merge sizes its pool (dflray.merge.pipeline._run_tasks)
    workers = cfg.workers.concurrency or max(1, int((RAY_CPUS - p.num_cpus * p.concurrency) // cfg.workers.num_cpus))
    if workers > 1:
        say(f"  {workers} merge workers ran videos at once: the records' seconds overlap, so the overhead is not "
            f"split into parts")
    else:
        say(table(["part of the overhead", "s per video"], [
            [f"run_merge's fixed cost around one video ([1]: {startup:.1f} s), shared by {n}", f"{startup / n:.3f}"],
            [f"in the worker: record seconds - {k} frames at the long clip's rate", f"{in_worker:.3f}"],
            ["between videos: scheduling, records, start-up work that grows with the count", f"{between:.3f}"],
            ["total", f"{startup / n + in_worker + between:.3f}"]], "<>"))
        say("  in the worker: a video of one batch (<= workers.batch_frames frames) cannot overlap its decode, crop,\n"
            "  paste and encode with the model's work as a long video does; the rest is per-video fixed work (faceset\n"
            "  read, opening the decoder and two encoders, flushing them, publishing, the frames table).")
    work_ms = 1000 * (m.seconds - m.watch.stage["model"]) / m.frames
    rest = fixed.per_video - k * work_ms / 1000
    say(f"  the worker's own cost per short video, in this process with the model stubbed out (merge_one on "
        f"{fixed.videos} videos):\n"
        f"    {fixed.per_video:.3f} s per video; at [2]'s per-frame rates (all but the model: {work_ms:.0f} ms) its {k} "
        f"frames take {k * work_ms / 1000:.3f} s, so the per-video fixed work\n"
        f"    (open, flush, faceset read, publish, tables) is {rest:+.3f} s; "
        f"reading the video's faces alone (_read_faces) {fixed.read_faces:.3f} s")


if __name__ == "__main__":
    main()
