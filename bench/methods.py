"""Forgery-method benchmark: frames/s of each method's merge on the same clip, against a decode + encode floor.

For each dst clip (the built-in sample's astronaut clip, and ``../shared/media/dst_man_glasses_b.mp4``
when that folder exists), on the same plan of faces and with the dataset job's merge output (lossless
RGB fakes plus the lossless mask video), prints the frames per second of the full per-video merge,
``merge_video`` through a ``Transcoder`` (decode → crop → method → paste → encode), for:

1. the floor: the same ``merge_video`` with an empty plan, i.e. decode + encode of every frame unchanged
   and of an all-zero mask; it runs first and last on each clip, and the ratios use the mean of the two;
2. every training-free method registered (``dflray.methods``, ``model == "none"``; new ones appear by
   themselves), built as the dataset job builds it (``method_predict`` with the crop ``method_contract``
   picks for a faceset of align size 256, ``whole_face``; the other person's aligned faces as its
   ``SourceFaces`` when it reads the source faceset);
3. the model methods, DeepFaceLab's models: untrained (weights do not change the speed) liae-ud models at
   128 px, a tiny one and one of SAEHD's default widths, the ``quick96`` method's fixed model (df-ud 96 px
   full face) and an AMP model at 128 px with DFL's default widths, checkpointed and exported to
   TorchScript by the project's own code and run through ``Predictor`` + ``InlinePredict``.

Each row gives frames, seconds, frames/s, the ms per frame it adds to the floor and its ratio to the
floor, with the CPU this process used and the CPU other programs used meanwhile (``bench/extract.py``'s
``Monitor``). Everything runs in this process, no Ray; threading is stated in the output.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/methods.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One BLAS/OpenMP thread (numpy, scipy) unless the caller set otherwise: read when those libraries load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from extract import Monitor, run_in_workdir, say, table  # noqa: E402  (bench/extract.py)
from merge import SAEHD_DIMS, cut, export_untrained, make_model  # noqa: E402  (bench/merge.py: untrained exports, clip cut)

from dflray.config import DetectConfig, LandmarkConfig, MergeConfig  # noqa: E402
from dflray.face.align import get_transform_mat, transform_points, warp_to_crop  # noqa: E402
from dflray.io.video import Transcoder, decode_frames, probe  # noqa: E402
from dflray.merge.methods import method_contract, method_predict  # noqa: E402
from dflray.merge.predict import Predictor  # noqa: E402
from dflray.merge.video import InlinePredict, merge_video, plan_faces, video_seed  # noqa: E402
from dflray.methods import SourceFaces, method_names, method_spec  # noqa: E402
from dflray.sample import make_sample  # noqa: E402

MEDIA = os.path.normpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                                      "shared", "media"))
MEDIA_DST, MEDIA_SRC = "dst_man_glasses_b.mp4", "src_man_a.mp4"
FACE_TYPE = "whole_face"
ALIGN_SIZE = 256  # the faceset's align size the methods' crop is picked for (method_contract)
SOURCE_FRAMES = 64  # source faces: up to this many evenly spaced frames of the other person's clip
TINY_DIMS = (64, 16, 16, 8)  # ae, e, d, mask dims of the tiny model (bench/generate.py's plan)


# ------------------------------------------------------------------------------------------------
# inputs: landmarks, plan, source faces, models


class FindLandmarks:
    """dflray's own dlib HOG detector and 68-point landmarker, no Ray (as tests/unit/methods/test_self_blend.py
    builds them): the largest face of a frame, 68×2 in frame pixels, or None."""

    def __init__(self):
        from dflray.detect import build_detector
        from dflray.detect.dlib_models import Dlib68Landmarker

        self.det = build_detector(DetectConfig(detector="dlib-hog"))
        self.lmk = Dlib68Landmarker(LandmarkConfig())

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        boxes = self.det.detect([frame])[0].boxes
        if not len(boxes):
            return None
        big = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        return self.lmk.landmarks(frame, big[None])[0].astype(np.float64)


def dst_plan(clip: str, find: FindLandmarks, cfg: MergeConfig):
    """The clip's faces (the largest per frame) planned as the merge plans them: tracks, gaps, smoothing."""
    idx, marks, frames = [], [], 0
    for f in decode_frames(clip):
        frames += 1
        lm = find(f.rgb)
        if lm is not None:
            idx.append(f.index)
            marks.append(lm)
    if not idx:
        raise SystemExit(f"no face was found in {clip}: the merge would have nothing to swap")
    idx_a = np.asarray(idx, np.int64)
    plan = plan_faces(idx_a, np.stack(marks), np.ones(len(idx_a), bool), smooth_window=cfg.smooth_window,
                      fill_gaps=cfg.fill_gaps or 0)
    return plan, frames


def source_faces(clip: str, find: FindLandmarks, size: int = ALIGN_SIZE, limit: int = SOURCE_FRAMES) -> SourceFaces:
    """Aligned ``size`` px crops (uint8 RGB) and their landmarks in crop pixels of the person in ``clip``,
    from up to ``limit`` evenly spaced frames: what ``load_source_faces`` reads from a faceset."""
    n = probe(clip).frame_count
    keep = set(np.linspace(0, n - 1, min(limit, n)).round().astype(int).tolist())
    crops, marks = [], []
    for f in decode_frames(clip):
        if f.index not in keep:
            continue
        lm = find(f.rgb)
        if lm is None:
            continue
        mat = get_transform_mat(lm, size, FACE_TYPE)
        crops.append(warp_to_crop(f.rgb, mat, size))
        marks.append(transform_points(lm, mat).astype(np.float32))
    if not crops:
        raise SystemExit(f"no face was found in {clip}: no source faces")
    return SourceFaces(np.stack(crops), np.stack(marks))


@dataclasses.dataclass
class Model:
    label: str
    path: str
    params: float  # millions
    seconds: float  # build + checkpoint + export
    describe: str = ""  # architecture, crop size and face type


def models(work: str, quick: bool) -> list[Model]:
    """Untrained DeepFaceLab models exported to TorchScript: liae-ud at 128 px (tiny and SAEHD's default widths),
    the quick96 method's fixed model and AMP at 128 px with DFL's default widths (--quick: the tiny LIAE and
    quick96 only)."""
    from dflray.config import ModelConfig
    from dflray.methods import method_spec
    from dflray.models import build_model, count_parameters

    q96 = ModelConfig(**method_spec("quick96").model_config)
    amp = ModelConfig(arch="amp", resolution=128, face_type=FACE_TYPE)  # DFL's AMP widths: 256/1024/64/64/22
    chosen = [(f"LIAE tiny ({'/'.join(map(str, TINY_DIMS))})", "liae", TINY_DIMS),
              (f"LIAE SAEHD default ({'/'.join(map(str, SAEHD_DIMS))})", "liae", SAEHD_DIMS),
              ("quick96 (DFL's fixed model)", q96, None),
              ("AMP DFL default (256/1024/64/64/22)", amp, None)]
    if quick:
        chosen = [chosen[0], chosen[2]]
    out = []
    for label, arch, dims in chosen:
        t = time.perf_counter()
        if dims is not None:
            d = os.path.join(work, "model-" + "x".join(map(str, dims)))
            os.makedirs(d, exist_ok=True)
            path, mc = make_model(d, 128, dims)
        else:
            mc = arch
            d = os.path.join(work, "model-" + mc.arch_string)
            os.makedirs(d, exist_ok=True)
            path = export_untrained(d, mc)
        n = count_parameters(build_model(mc))["total"] / 1e6
        out.append(Model(label, path, n, time.perf_counter() - t, f"{mc.arch_string} {mc.resolution} px {mc.face_type}"))
    return out


# ------------------------------------------------------------------------------------------------
# the measurement


@dataclasses.dataclass
class Row:
    label: str
    resolution: int | None
    frames: int
    faces: int
    seconds: float
    mon: Monitor
    build: float = 0.0  # seconds to build the method / load and warm up the model (not in `seconds`)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


class Counting:
    """Wraps a ``PredictFn`` and counts the crops sent to it."""

    def __init__(self, inner):
        self.inner, self.faces = inner, 0
        self.batch_size = inner.batch_size
        self.wants_landmarks = getattr(inner, "wants_landmarks", False)

    def submit(self, crops, *landmarks):
        self.faces += len(crops)
        return self.inner.submit(crops, *landmarks)

    def result(self, handle):
        return self.inner.result(handle)


def timed_merge(label: str, clip: str, plan, predict, cfg: MergeConfig, resolution: int | None, out: str,
                build: float = 0.0, face_type: str = FACE_TYPE) -> Row:
    """``merge_video`` of the whole clip through a Transcoder with the merge's output settings, timed."""
    from dflray.faceset import video_id

    o = cfg.output
    predict = Counting(predict)
    with Monitor(interval=0.5) as mon:
        t0 = time.perf_counter()
        with Transcoder(clip, os.path.join(out, "fake.mp4"), mask_path=os.path.join(out, "mask.mp4") if o.masks
                        else None, crf=o.crf, preset=o.preset, lossless=o.lossless, mask_crf=o.mask_crf) as tr:
            rows = merge_video(tr, plan, predict, cfg.settings, face_type=face_type, resolution=resolution or 64,
                               seed=video_seed(cfg.seed, video_id(clip)), batch_frames=cfg.workers.batch_frames)
        secs = time.perf_counter() - t0
    for name in ("fake.mp4", "mask.mp4"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    r = Row(label, resolution, len(rows), predict.faces, secs, mon, build)
    say(f"    {label}: {r.frames} frames, {r.faces} faces in {r.seconds:.1f} s = {r.fps:.2f} frames/s"
        + (f" (build {build:.1f} s, not counted)" if build else "") + f";  {mon.load()}")
    return r


def bench_clip(name: str, clip: str, src: str, src_name: str, find: FindLandmarks, mods: list[Model],
               cfg: MergeConfig, work: str) -> list[Row]:
    t = time.perf_counter()
    plan, frames = dst_plan(clip, find, cfg)
    sources = source_faces(src, find)
    info = probe(clip)
    say(f"\n[{name}] {os.path.basename(clip)}: {info.width}x{info.height} {info.fps:.0f} fps, {frames} frames, "
        f"audio: {'yes' if info.has_audio else 'no'}; faces planned in {len(plan)} frames; source faces: "
        f"{len(sources.crops)} aligned {ALIGN_SIZE} px crops of {src_name} ({time.perf_counter() - t:.0f} s "
        f"detecting, not counted)")
    out = os.path.join(work, "out")
    os.makedirs(out, exist_ok=True)
    rows = [timed_merge("floor: decode + encode (empty plan), 1st", clip, {}, InlinePredict(None, 1), cfg, None, out)]
    seed = 0
    for m in method_names():
        spec = method_spec(m)
        if spec.model != "none":
            continue
        if spec.assets is not None:  # onnx-swap: the user's ONNX models, none of which may be downloaded here
            say(f"    {m}: not measured (it runs the ONNX models you give it; none ships with dflray)")
            continue
        contract = method_contract(m, FACE_TYPE, ALIGN_SIZE)
        t = time.perf_counter()
        predict = method_predict(m, {}, contract, seed=seed, sources=sources if "source" in spec.reads else None,
                                 batch_size=cfg.predict.batch_size)
        rows.append(timed_merge(m, clip, plan, predict, cfg, contract.resolution, out, time.perf_counter() - t))
    for mod in mods:
        t = time.perf_counter()
        p = Predictor.load(mod.path, "cpu", cfg.predict.precision)
        for _ in range(3):  # TorchScript's profiling executor optimises after the first calls of a shape
            p(np.zeros((min(cfg.workers.batch_frames, cfg.predict.batch_size), p.resolution, p.resolution, 3),
                       np.float32))
        rows.append(timed_merge(mod.label, clip, plan, InlinePredict(p, cfg.predict.batch_size), cfg, p.resolution,
                                out, time.perf_counter() - t, face_type=p.face_type))
    rows.append(timed_merge("floor: decode + encode (empty plan), 2nd", clip, {}, InlinePredict(None, 1), cfg, None,
                            out))
    floor_fps = statistics.mean([rows[0].fps, rows[-1].fps])
    floor_ms = 1000 / floor_fps

    def cells(r: Row) -> list:
        w = r.mon.wall or 1.0
        return [r.label, r.resolution or "-", r.frames, r.faces, f"{r.seconds:.1f}", f"{r.fps:.2f}",
                f"{1000 / r.fps - floor_ms:+.1f}", f"{r.fps / floor_fps:.3f}", f"{r.mon.own / w:.2f}",
                f"{1000 * r.mon.own / r.frames:.0f}", f"{r.mon.other / w:.2f}"]

    say(f"\n  [{name}] summary: floor = mean of its 2 runs, {floor_fps:.2f} frames/s ({floor_ms:.1f} ms/frame)")
    say(table(["method", "px", "frames", "faces", "seconds", "frames/s", "ms/frame over floor", "vs floor",
               "cores used", "CPU ms/frame", "other load (cores)"], [cells(r) for r in rows]))
    return rows


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 s clips, the tiny LIAE and quick96 models only (no SAEHD-width LIAE, no AMP)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="length of the sample clips and of the cut of the media clip, seconds (default 3)")
    ap.add_argument("--size", type=int, default=384, help="side of the sample clips, px (default 384)")
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
    run_in_workdir("dflray-bench-methods-", _main, args)


def _main(args, work: str) -> None:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    # The dataset job's merge config (GenerateConfig.merge defaults to MergeConfig(); and as
    # dflray.dataset.stages.merge._merge_config sets it: lossless fakes, masks on).
    base = MergeConfig()
    cfg = dataclasses.replace(base, output=dataclasses.replace(base.output, lossless=True, masks=True))
    say("dflray forgery-method merge benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}")
    say(f"  threads: torch {torch.get_num_threads()}, OpenCV {cv2.getNumThreads()}, BLAS/OpenMP "
        f"{os.environ.get('OPENBLAS_NUM_THREADS')} (env); PyAV decodes with thread_type AUTO and x264 picks its own "
        f"threads, as the Transcoder sets them for every row, the floor included; no Ray")
    s, o = cfg.settings, cfg.output
    say(f"  merge: MergeConfig defaults (GenerateConfig.merge's) as the dataset job merges fakes: mode={s.mode} "
        f"mask_mode={s.mask_mode} color_transfer={s.color_transfer};\n    output lossless={o.lossless} (libx264rgb) "
        f"preset={o.preset}, masks={o.masks} (mask_crf={o.mask_crf}); workers.batch_frames={cfg.workers.batch_frames}, "
        f"predict.batch_size={cfg.predict.batch_size}, precision={cfg.predict.precision}")
    say(f"  methods: each training-free method registered, on the crop method_contract picks for a faceset of "
        f"align size {ALIGN_SIZE}, {FACE_TYPE}: " + ", ".join(
            f"{m} {method_contract(m, FACE_TYPE, ALIGN_SIZE).resolution} px" for m in method_names()
            if method_spec(m).model == "none" and method_spec(m).assets is None))

    t = time.perf_counter()
    mods = models(work, args.quick)
    for m in mods:
        say(f"  model: {m.label}: {m.describe}, {m.params:.1f} M parameters, untrained, exported to "
            f"TorchScript ({m.seconds:.1f} s), run on CPU")
    if args.quick:
        say("  --quick: the SAEHD default-width LIAE and the AMP model are left out")
    sample = make_sample(os.path.join(work, "sample"), seconds=args.seconds, size=args.size)
    find = FindLandmarks()
    say(f"  inputs ready in {time.perf_counter() - t:.0f} s (not counted); landmarks: dlib HOG + dlib68, largest "
        f"face per frame, found once per clip before timing")

    clips = [("sample", sample[0], sample[1], "grace_hopper (the other sample clip)")]
    dst, src = os.path.join(MEDIA, MEDIA_DST), os.path.join(MEDIA, MEDIA_SRC)
    if os.path.exists(dst):
        info = probe(dst)
        n = max(1, int(round(args.seconds * info.fps)))
        if n < info.frame_count:
            dst = cut(dst, os.path.join(work, "media", f"first{n}.mp4"), n, preset="veryfast")
            say(f"  media clip: the first {n} frames of {MEDIA_DST} ({info.frame_count} frames), re-encoded (crf 18)")
        if os.path.exists(src):
            clips.append(("media", dst, src, MEDIA_SRC))
        else:
            say(f"  NOTE: {src} not found; the media clip's source faces are the grace_hopper sample's")
            clips.append(("media", dst, sample[1], "grace_hopper (the sample; src_man_a.mp4 absent)"))
    else:
        say(f"  NOTE: {dst} not found; only the built-in sample is measured")

    for name, clip, source, source_name in clips:
        bench_clip(name, clip, source, source_name, find, mods, cfg, work)
    say("\n  ms/frame over floor: 1000/frames/s of the row minus the floor's 1000/frames/s; vs floor: frames/s over "
        "the floor's;\n  cores used / CPU ms/frame: CPU time of this process (every thread: decode, x264, torch) over "
        "wall time / frames;\n  other load: cores used by other programs meanwhile (timings are only comparable "
        "when it is near 0)")


if __name__ == "__main__":
    main()
