"""XSeg benchmark: apply's masks/s (Ray vs a plain loop) and the IoU of the hull vs XSeg, in one run.

Prints, on facesets extracted once from the built-in sample and ../shared/media (cached):

1. The model: a given ``--model xseg.pt``, or one trained here with ``dflray xseg train`` (small: 64 px,
   base 16, depth 4, Adam) on the held-in faces only, with its training time.
2. Quality: on held-out faces (never trained on) with synthetic occluders pasted over them (a fixed seed,
   no augmentation), the mean IoU with the true visible face (hull minus occluders) of the landmark hull
   and of XSeg's mask; per dataset, per occluder kind, on unoccluded faces (XSeg against the hull, which
   is then the truth) and on held-in faces (the gap to held-out shows over-fitting).
3. Throughput: masks/s of ``dflray.extract.run_xseg_apply`` on a local 2-CPU Ray cluster against a plain
   in-process loop doing the same work per faces file (Parquet read, JPEG decode, ``predict_mask`` in
   batches, PNG encode, Parquet write), and their ratio; where the loop's time goes.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/xseg.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from extract import Monitor, quiet_ray, run_in_workdir, say, table  # noqa: E402  (bench/extract.py: the CPU-load monitor and table)

from dflray.config import ExtractConfig, XSegApplyConfig, XSegTrainConfig, load_config  # noqa: E402
from dflray.sample import make_sample  # noqa: E402

RAY_CPUS = 2
MEDIA = os.path.normpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                                      "media"))
MEDIA_CLIPS = ("src_man_a.mp4", "dst_man_glasses_b.mp4", "woman_room_audio_e.mp4")
# The small CPU model: ~0.3 M parameters, a few hundred steps train in about two minutes on one core.
TRAIN = ("resolution=64", "base=16", "depth=4", "batch_size=8", "optimizer=adam", "lr=0.001", "data_cpus=0.5")
EXTRACT = ("align.size=128", "landmarks.embedding=false")


# ------------------------------------------------------------------------------------------------
# facesets


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The benchmark's facesets: ``sets`` maps a dataset name (sample, media) to its faceset path."""

    sets: dict[str, str]
    notes: list[str]


def facesets(cache_dir: str, quick: bool, media_every: int) -> Inputs:
    """The sample's faceset and, when ../shared/media has the clips, the media faceset; extracted once.

    Extraction: ``run_extract`` with ``align.size=128 landmarks.embedding=false`` on the running Ray
    cluster. The sample: two 4 s clips (1 s with ``quick``); the media: every ``media_every``-th frame
    of three clips (their first 60 frames with ``quick``).
    """
    from dflray.extract import run_extract

    seconds = 1.0 if quick else 4.0
    media_max = 60 if quick else None
    root = os.path.join(cache_dir, f"xseg-facesets-{seconds:g}s-media{media_every}" + ("-quick" if quick else ""))
    notes: list[str] = []
    sets: dict[str, str] = {}
    cfg = load_config(ExtractConfig, overrides=list(EXTRACT))

    sample = os.path.join(root, "sample")
    if not os.path.exists(sample + ".DONE"):
        shutil.rmtree(sample, ignore_errors=True)
        clips = make_sample(os.path.join(cache_dir, f"sample-{seconds:g}s"), seconds=seconds)
        t = time.perf_counter()
        s = run_extract(clips, sample, cfg)
        say(f"  extracted the sample (once; cached in {root}): {s.faces} faces from {s.frames} frames in "
            f"{time.perf_counter() - t:.0f} s")
        open(sample + ".DONE", "w").close()
    sets["sample"] = sample

    clips = [os.path.join(MEDIA, n) for n in MEDIA_CLIPS]
    missing = [c for c in clips if not os.path.isfile(c)]
    if missing:
        notes.append(f"NOTE: {', '.join(missing)} not found; the media dataset is left out")
        return Inputs(sets, notes)
    media = os.path.join(root, "media")
    if not os.path.exists(media + ".DONE"):
        shutil.rmtree(media, ignore_errors=True)
        over = [*EXTRACT, f"decode.every_n={media_every}"] + ([f"decode.max_frames={media_max}"] if media_max else [])
        t = time.perf_counter()
        s = run_extract(clips, media, load_config(ExtractConfig, overrides=over))
        say(f"  extracted the media clips (once; cached in {root}): {s.faces} faces from {s.frames} frames in "
            f"{time.perf_counter() - t:.0f} s")
        open(media + ".DONE", "w").close()
    sets["media"] = media
    return Inputs(sets, notes)


def held_out(video_id: list[str], frame_index: list[int], face_index: list[int], split: str, every: int
             ) -> np.ndarray:
    """Which faces are held out: per video, in (frame, face) order, every ``every``-th face (``split=every``)
    or the last 1/``every`` of them (``split=tail``: a stretch of the video training never saw)."""
    out = np.zeros(len(video_id), bool)
    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(video_id):
        by_video.setdefault(v, []).append(i)
    for rows in by_video.values():
        rows.sort(key=lambda i: (frame_index[i], face_index[i]))
        n = len(rows)
        for rank, i in enumerate(rows):
            out[i] = (rank % every == every - 1) if split == "every" else (rank >= n - -(-n // every))
    return out


def held_in_faceset(faceset: str, out: str, split: str, every: int) -> tuple[int, int]:
    """Copies ``faceset`` to ``out`` keeping only the held-in faces; returns (held-in, held-out) counts."""
    from dflray.faceset import read_faces

    keys = read_faces(faceset, columns=["video_id", "frame_index", "face_index"]).to_pydict()
    out_flags = held_out(keys["video_id"], keys["frame_index"], keys["face_index"], split, every)
    held = {(v, f, k) for v, f, k, h in zip(keys["video_id"], keys["frame_index"], keys["face_index"], out_flags) if h}
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(faceset, out, ignore=shutil.ignore_patterns("faces"))
    os.makedirs(os.path.join(out, "faces"))
    for name in sorted(os.listdir(os.path.join(faceset, "faces"))):
        t = pq.read_table(os.path.join(faceset, "faces", name))
        d = t.select(["video_id", "frame_index", "face_index"]).to_pydict()
        keep = [(v, f, k) not in held for v, f, k in zip(d["video_id"], d["frame_index"], d["face_index"])]
        pq.write_table(t.filter(pa.array(keep)), os.path.join(out, "faces", name))
    return len(out_flags) - int(out_flags.sum()), int(out_flags.sum())


def crops_and_hulls(faceset: str, split: str, every: int) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """RGB crops and hull masks of the faceset's faces, as ``{"held-out": ..., "held-in": ...}``."""
    from dflray.faceset import read_faces

    t = read_faces(faceset, columns=["video_id", "frame_index", "face_index", "image", "mask"]).to_pydict()
    flags = held_out(t["video_id"], t["frame_index"], t["face_index"], split, every)
    crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in t["image"]]
    hulls = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in t["mask"]]
    pick = lambda want: ([c for c, f in zip(crops, flags) if f == want], [h for h, f in zip(hulls, flags) if f == want])  # noqa: E731
    return {"held-out": pick(True), "held-in": pick(False)}


# ------------------------------------------------------------------------------------------------
# the model


@dataclasses.dataclass
class Trained:
    path: str
    seconds: float
    summary: object  # XSegTrainSummary
    mon: Monitor
    held: list[str]  # the held-in facesets it trained on


def train(sets: dict[str, str], work: str, steps: int, split: str, every: int) -> Trained:
    """Trains the small model with ``dflray xseg train`` (``run_xseg_train``, what the CLI calls) on the
    held-in copies of the facesets; the clock covers all of it (Ray Train's start included)."""
    from dflray.train.xseg import run_xseg_train

    held = []
    for name, fs in sets.items():
        dst = os.path.join(work, "held-in", name)
        n_in, n_out = held_in_faceset(fs, dst, split, every)
        say(f"    {name}: {n_in} faces held in for training, {n_out} held out")
        held.append(dst)
    over = [*TRAIN, f"steps={steps}", f"checkpoint_every={steps}", f"log_every={max(1, min(100, steps))}"]
    say(f"    dflray xseg train {' '.join(os.path.basename(h) for h in held)} --out OUT {' '.join(over)}")
    cfg = load_config(XSegTrainConfig, overrides=over)
    out = os.path.join(work, "xseg")
    with Monitor(interval=1.0) as mon:
        t = time.perf_counter()
        summary = run_xseg_train(held, out, cfg)
        secs = time.perf_counter() - t
    return Trained(path=os.path.join(out, "xseg.pt"), seconds=secs, summary=summary, mon=mon, held=held)


def step_costs(held: list[str], steps: int = 10, seed: int = 0) -> tuple[float, float]:
    """(seconds per training step, seconds to make one batch) of the same model and batch in this process,
    torch 1 thread as the Ray Train worker runs: forward + dice/BCE + backward + Adam at batch 8, and
    ``make_xseg_batch`` (occluders, augmentation) for 8 samples as the data pipeline's ``make_samples`` does
    (its JPEG and PNG decodes left out)."""
    from dflray.models.xseg import XSeg, dice_bce_loss
    from dflray.train.occlusion import make_xseg_batch

    cfg = load_config(XSegTrainConfig, overrides=list(TRAIN))
    crops: list[np.ndarray] = []
    hulls: list[np.ndarray] = []
    for fs in held:
        d = crops_and_hulls(fs, "every", 1 << 30)["held-in"]
        crops += d[0][:32]
        hulls += d[1][:32]
    rng = np.random.default_rng(seed)
    b = cfg.batch_size
    t = time.perf_counter()
    batches = []
    for i in range(0, len(crops) - b + 1, b):
        batches.append(make_xseg_batch(crops[i:i + b], hulls[i:i + b], rng, cfg.resolution, pool=crops[i:i + b],
                                       max_occluders=cfg.max_occluders, coverage=tuple(cfg.coverage),
                                       p_none=cfg.p_none))
    make = (time.perf_counter() - t) / len(batches)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = XSeg(cfg.resolution, cfg.base, cfg.depth)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for i in range(steps + 2):
            if i == 2:
                t = time.perf_counter()
            x, y = (torch.from_numpy(a) for a in batches[i % len(batches)])
            loss = dice_bce_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t) / steps, make
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------
# quality


@dataclasses.dataclass
class Quality:
    """Per-face results of one occlusion draw; the means are over the faces an occluder was pasted on."""

    hull_iou: np.ndarray  # IoU of the hull with the truth
    xseg_iou: np.ndarray  # IoU of XSeg's mask with the truth
    covered: np.ndarray  # fraction of the hull the occluders cover
    placed: np.ndarray  # bool: an occluder was pasted (placement can fail within the coverage range)

    @property
    def n(self) -> int:
        return len(self.placed)

    def mean(self, values: np.ndarray) -> float:
        sel = self.placed if self.placed.any() else np.ones_like(self.placed)
        return float(values[sel].mean())

    @staticmethod
    def join(parts: list["Quality"]) -> "Quality":
        return Quality(*(np.concatenate([getattr(q, f.name) for q in parts]) for f in dataclasses.fields(Quality)))


def occluded_quality(model, crops: list[np.ndarray], hulls: list[np.ndarray], seed: int,
                     coverage: tuple[float, float], kind: str | None = None) -> Quality:
    """Mean IoU with the true visible face of the hull and of XSeg, on synthetic occlusions of a fixed seed.

    As ``tests/integration/test_xseg_train.py`` measures it: ``make_xseg_batch(augment=False, p_none=0)``
    at the model's resolution; the truth is the hull minus the occluders; masks binarised at 0.5.
    """
    from dflray.models.xseg import iou_per_sample, predict_mask
    from dflray.train.occlusion import make_xseg_batch

    res = model.config()["resolution"]
    x, y = make_xseg_batch(crops, hulls, np.random.default_rng(seed), res, augment=False, p_none=0.0,
                           coverage=coverage, kinds=None if kind is None else [kind])
    hull = make_xseg_batch(crops, hulls, np.random.default_rng(seed), res, augment=False, p_none=1.0)[1][:, 0]
    truth = y[:, 0]
    placed = (truth != hull).reshape(len(hull), -1).any(1)
    images = np.clip(np.rint(x.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    pred = predict_mask(model, images, batch_size=32)
    iou_x, iou_h = iou_per_sample(pred, truth), iou_per_sample(hull, truth)
    area = np.maximum(hull.reshape(len(hull), -1).sum(1), 1)
    cov = 1.0 - truth.reshape(len(truth), -1).sum(1) / area
    return Quality(hull_iou=iou_h, xseg_iou=iou_x, covered=cov, placed=placed)


def clean_quality(model, crops: list[np.ndarray], hulls: list[np.ndarray]) -> np.ndarray:
    """Per-face IoU of XSeg's mask with the hull on the faces as they are (no occluder: the hull is the truth)."""
    from dflray.models.xseg import iou_per_sample, predict_mask
    from dflray.train.occlusion import make_xseg_batch

    x, hull = make_xseg_batch(crops, hulls, np.random.default_rng(0), model.config()["resolution"], augment=False,
                              p_none=1.0)
    images = np.clip(np.rint(x.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    return iou_per_sample(predict_mask(model, images, batch_size=32), hull[:, 0])


def quality(model, sets: dict[str, str], split: str, every: int, seed: int, coverage: tuple[float, float]) -> None:
    """Part [2]: prints the IoU tables."""
    from dflray.train.occlusion import OCCLUDER_KINDS

    data = {name: crops_and_hulls(fs, split, every) for name, fs in sets.items()}
    res = model.config()["resolution"]
    say(f"  at the model's resolution ({res} px; crops resized as apply does), masks binarised at 0.5; occluders "
        f"pasted by\n  make_xseg_batch(augment=False, p_none=0, coverage={coverage[0]:g}..{coverage[1]:g}), "
        f"1-2 per face, seed {seed} (+1 per dataset, +10 per kind); truth = hull minus occluders,\n  so hull IoU = "
        f"1 - covered. Means over the occluded faces (a face whose placement never fitted the coverage\n  range "
        f"stays unoccluded and is left out); unoccluded: the faces as they are, XSeg's IoU with the hull.")

    def row(label: str, q: Quality, clean: np.ndarray) -> list:
        h, x = q.mean(q.hull_iou), q.mean(q.xseg_iou)
        return [label, q.n, int(q.placed.sum()), f"{q.mean(q.covered):.3f}", f"{h:.3f}", f"{x:.3f}", f"{x - h:+.3f}",
                f"{clean.mean():.3f}"]

    headers = ["faces", "n", "occluded", "covered", "hull IoU", "XSeg IoU", "XSeg - hull", "unoccluded: XSeg vs hull"]
    rows = []
    outs: list[Quality] = []
    cleans: list[np.ndarray] = []
    for i, (name, d) in enumerate(data.items()):
        crops, hulls = d["held-out"]
        outs.append(occluded_quality(model, crops, hulls, seed + i, coverage))
        cleans.append(clean_quality(model, crops, hulls))
        rows.append(row(f"{name}, held out", outs[-1], cleans[-1]))
    if len(data) > 1:
        rows.append(row("all held out", Quality.join(outs), np.concatenate(cleans)))
    for i, (name, d) in enumerate(data.items()):
        crops, hulls = d["held-in"]
        step = max(1, len(crops) // max(1, len(d["held-out"][0])))  # about as many as held out, spread evenly
        crops, hulls = crops[::step], hulls[::step]
        rows.append(row(f"{name}, held in (trained on; new occlusions)",
                        occluded_quality(model, crops, hulls, seed + i, coverage), clean_quality(model, crops, hulls)))
    say(table(headers, rows))

    all_crops = [c for d in data.values() for c in d["held-out"][0]]
    all_hulls = [h for d in data.values() for h in d["held-out"][1]]
    say(f"\n  per occluder kind, all held-out faces ({len(all_crops)}), every occluder of that kind (make_xseg_batch's\n"
        f"  kinds=[...]; training drew the {len(OCCLUDER_KINDS)} kinds uniformly):")
    krows = []
    for j, kind in enumerate(OCCLUDER_KINDS):
        q = occluded_quality(model, all_crops, all_hulls, seed + 10 * (j + 1), coverage, kind=kind)
        h, x = q.mean(q.hull_iou), q.mean(q.xseg_iou)
        krows.append([kind, q.n, int(q.placed.sum()), f"{q.mean(q.covered):.3f}", f"{h:.3f}", f"{x:.3f}",
                      f"{x - h:+.3f}"])
    say(table(["kind", "n", "occluded", "covered", "hull IoU", "XSeg IoU", "XSeg - hull"], krows))


# ------------------------------------------------------------------------------------------------
# throughput


def throughput_faceset(sets: dict[str, str], out: str, min_faces: int) -> tuple[int, int]:
    """One faceset of every face of ``sets``, its faces files copied (under new names of the same committed
    run) until it holds at least ``min_faces``; returns (faces, files). Nothing in it has an XSeg mask."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "faces"))
    os.makedirs(os.path.join(out, "videos"))
    shutil.copyfile(os.path.join(next(iter(sets.values())), "faceset.json"), os.path.join(out, "faceset.json"))
    files: list[tuple[str, int]] = []
    for fs in sets.values():
        for name in os.listdir(os.path.join(fs, "videos")):
            shutil.copyfile(os.path.join(fs, "videos", name), os.path.join(out, "videos", name))
        for name in sorted(os.listdir(os.path.join(fs, "faces"))):
            path = os.path.join(fs, "faces", name)
            files.append((path, pq.read_metadata(path).num_rows))
    per_copy = sum(n for _, n in files)
    copies = max(1, -(-min_faces // max(per_copy, 1)))
    for k in range(copies):
        for path, _ in files:
            run, rest = os.path.basename(path).split("-", 1)
            shutil.copyfile(path, os.path.join(out, "faces", f"{run}-c{k:03d}{rest}"))
    return per_copy * copies, len(files) * copies


@dataclasses.dataclass
class Timed:
    label: str
    faces: int
    seconds: float
    mon: Monitor
    stage: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.faces / self.seconds


LOOP_STAGES = ("read", "decode JPEG", "predict_mask", "encode PNG", "write")


def loop_apply(faceset: str, model_path: str, threads: int, cfg: XSegApplyConfig, label: str) -> Timed:
    """This process, no Ray: what ``ApplyStage._one`` does to every faces file, one file after another, timed
    per stage: Parquet read + ``schema.conform``, JPEG decode, ``predict_mask`` (``cfg.batch_size`` crops per
    forward pass, crops of one size together), PNG encode, the column swap and the Parquet write
    (temporary name, then rename). The model is loaded and warmed up before the clock starts."""
    from dflray.artifacts.xseg import load_xseg, model_id
    from dflray.faceset import committed_face_files
    from dflray.io import schema
    from dflray.models.xseg import predict_mask

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_xseg(model_path)
        sha = model_id(model_path)
        predict_mask(model, np.zeros((cfg.batch_size, 128, 128, 3), np.uint8), batch_size=cfg.batch_size)
        files = committed_face_files(faceset)
        st = dict.fromkeys(LOOP_STAGES, 0.0)
        faces = 0
        with Monitor(interval=0.5) as mon:
            t0 = time.perf_counter()
            for path in files:
                t = time.perf_counter()
                tab = schema.conform("faces", pq.read_table(path))
                t1 = time.perf_counter()
                st["read"] += t1 - t
                crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                         for b in tab.column("image").to_pylist()]
                t2 = time.perf_counter()
                st["decode JPEG"] += t2 - t1
                masks: list[bytes | None] = [None] * len(crops)
                for size in sorted({c.shape[0] for c in crops}):
                    idx = [i for i, c in enumerate(crops) if c.shape[0] == size]
                    ta = time.perf_counter()
                    m = predict_mask(model, np.stack([crops[i] for i in idx]), batch_size=cfg.batch_size)
                    tb = time.perf_counter()
                    st["predict_mask"] += tb - ta
                    for i, mi in zip(idx, m.reshape(len(idx), size, size)):
                        mi = (mi >= cfg.threshold).astype(np.float32) if cfg.threshold > 0 else mi
                        masks[i] = cv2.imencode(".png", np.clip(np.rint(mi * 255), 0, 255).astype(np.uint8))[1].tobytes()
                    st["encode PNG"] += time.perf_counter() - tb
                t3 = time.perf_counter()
                tab = tab.set_column(tab.column_names.index("xseg"), "xseg", pa.array(masks, pa.binary()))
                tab = tab.set_column(tab.column_names.index("xseg_model"), "xseg_model",
                                     pa.array([sha] * tab.num_rows, pa.string()))
                head, tail = os.path.split(path)
                tmp = os.path.join(head, f".tmp-{time.time_ns()}-{tail}")
                pq.write_table(tab.cast(schema.with_version(schema.FACES)), tmp)
                os.replace(tmp, path)
                st["write"] += time.perf_counter() - t3
                faces += tab.num_rows
            secs = time.perf_counter() - t0
        return Timed(label=label, faces=faces, seconds=secs, mon=mon, stage=st)
    finally:
        torch.set_num_threads(old)


def ray_apply(faceset: str, model_path: str, cfg: XSegApplyConfig, label: str) -> tuple[Timed, object]:
    """``run_xseg_apply`` on the running cluster; the clock covers all of it (model check and hash, file
    listing, actor start and model load, every file, the summary)."""
    from dflray.extract.xseg_apply import run_xseg_apply

    with Monitor(interval=0.5) as mon:
        t = time.perf_counter()
        s = run_xseg_apply(faceset, model_path, cfg)
        secs = time.perf_counter() - t
    return Timed(label=label, faces=s.faces, seconds=secs, mon=mon), s


def mask_difference(a: str, b: str) -> tuple[int, float]:
    """(faces compared, largest absolute difference in 0..255) between the xseg columns of two facesets
    that were copies of one another before apply."""
    from dflray.faceset import read_faces

    ta, tb = (read_faces(f, columns=["xseg"]).column("xseg").to_pylist() for f in (a, b))
    worst = 0.0
    for x, y in zip(ta, tb):
        if x is None or y is None:
            return len(ta), float("nan")
        mx = cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.int16)
        my = cv2.imdecode(np.frombuffer(y, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.int16)
        worst = max(worst, float(np.abs(mx - my).max()))
    return len(ta), worst


# ------------------------------------------------------------------------------------------------
# main


def _start_ray() -> float:
    """Starts the local cluster quietly and lets its first workers come up; returns the seconds it took."""
    t = time.perf_counter()
    quiet_ray(RAY_CPUS)
    ray.get(ray.remote(num_cpus=0)(lambda: None).remote())
    time.sleep(2.0)  # the prestarted workers finish importing
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~2 min): 1 s sample clips, the media clips' first 60 frames, 60 training steps, "
                         ">= 600 faces for throughput, each side timed once, no pinned loop")
    ap.add_argument("--model", metavar="PATH", help="an xseg.pt to benchmark (default: train one here)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the model trained here (default 1000)")
    ap.add_argument("--save-model", metavar="PATH", help="copy the model trained here to PATH")
    ap.add_argument("--split", choices=("tail", "every"), default="tail",
                    help="held-out faces: the last 1/N of each video's faces (tail, default) or every N-th face")
    ap.add_argument("--holdout", type=int, default=5, metavar="N", help="N of --split (default 5: a fifth held out)")
    ap.add_argument("--media-every", type=int, default=4, help="decode.every_n of the media clips (default 4)")
    ap.add_argument("--coverage", default="0.05,0.45", metavar="LO,HI",
                    help="fraction of the face the occluders cover (default 0.05,0.45, the training default)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the held-out occlusions (default 2024)")
    ap.add_argument("--min-faces", type=int, default=3000,
                    help="faces in the throughput faceset: the facesets' files copied until it has this many "
                         "(default 3000; 600 with --quick)")
    ap.add_argument("--batch-size", type=int, default=XSegApplyConfig().batch_size,
                    help="XSegApplyConfig.batch_size of both sides (default %(default)s)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where the sample clips and facesets are kept between runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 60)
        args.min_faces = min(args.min_faces, 600)
    run_in_workdir("dflray-bench-xseg-", _main, args)


def _main(args, work: str) -> None:
    coverage = tuple(float(v) for v in args.coverage.split(","))
    apply_cfg = XSegApplyConfig(batch_size=args.batch_size)

    say("dflray XSeg benchmark")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs ({psutil.cpu_count(logical=False)} physical), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}; "
        f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")

    # ---- inputs
    t_in = time.perf_counter()
    t_ray = _start_ray()
    inputs = facesets(args.cache_dir, args.quick, args.media_every)
    for note in inputs.notes:
        say(f"  {note}")
    from dflray.faceset import read_faces

    for name, fs in inputs.sets.items():
        t = read_faces(fs, columns=["video_id", "size", "face_type"]).to_pydict()
        say(f"  {name}: {len(t['video_id'])} faces from {len(set(t['video_id']))} videos, "
            f"{t['face_type'][0]} {t['size'][0]} px crops ({fs})")
    say(f"  held out: {'the last' if args.split == 'tail' else 'every'} 1/{args.holdout} of each video's faces "
        f"(--split {args.split})")

    # ---- [1] the model
    say("\n[1] the model")
    if args.model:
        model_path = os.path.abspath(args.model)
        say(f"  given: {model_path} (its training faces are unknown: 'held out' may not be)")
    else:
        say(f"  trained here on a local ray.init(num_cpus={RAY_CPUS}) (started in {t_ray:.1f} s), 1 Ray Train "
            f"worker x 1 CPU")
        tr = train(inputs.sets, work, args.steps, args.split, args.holdout)
        model_path = tr.path
        s = tr.summary
        m = s.metrics
        say(f"    {s.steps} steps of batch 8 in {tr.seconds:.1f} s (Ray Train start, the data pipeline and the "
            f"checkpoint included) = {tr.seconds / max(s.steps, 1):.3f} s/step; last window: loss {m.get('loss', 0):.4f}"
            f", batch IoU {m.get('iou', 0):.3f}, {m.get('samples_per_s', 0):.1f} samples/s")
        say(f"      {tr.mon.load()}")
        if args.save_model:
            shutil.copyfile(model_path, args.save_model)
            say(f"    saved to {args.save_model}")
    ray.shutdown()
    if not args.model:
        step, make = step_costs(tr.held)
        steps = tr.summary.steps
        say(f"    the same work in this process, torch 1 thread: a step (forward, dice+BCE, backward, Adam; batch 8) "
            f"{1000 * step:.0f} ms,\n    making its batch (make_xseg_batch: occluders + augmentation) {1000 * make:.0f} ms;"
            f" {steps} steps of compute alone = {steps * step:.0f} s: the Ray Train run took "
            f"{tr.seconds / (steps * step):.2f}x that")
    from dflray.artifacts.xseg import load_xseg
    from dflray.models import count_parameters

    model = load_xseg(model_path)
    c = model.config()
    say(f"  model: {c['resolution']} px, base {c['base']}, depth {c['depth']}, {c['face_type']}, "
        f"{count_parameters(model)['total'] / 1e6:.2f} M parameters")

    # ---- [2] quality
    say("\n[2] quality: mean IoU with the true visible face (this process, no Ray)")
    t = time.perf_counter()
    quality(model, inputs.sets, args.split, args.holdout, args.seed, coverage)
    say(f"  ({time.perf_counter() - t:.0f} s)")

    # ---- [3] throughput
    say("\n[3] throughput of apply: plain in-process loop vs run_xseg_apply on Ray (same faceset, same model)")
    base = os.path.join(work, "apply-base")
    faces, files = throughput_faceset(inputs.sets, base, args.min_faces)
    say(f"  faceset: every face of the facesets above, its faces files copied to {faces} faces in {files} files "
        f"({faces / files:.0f} faces a file);\n  each timed run gets a fresh copy without masks (apply skips "
        f"files already done with the model). XSegApplyConfig(batch_size={apply_cfg.batch_size})")
    say(f"  setting up took {time.perf_counter() - t_in:.0f} s (not counted)")

    def fresh(label: str) -> str:
        dst = os.path.join(work, "apply", label)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(base, dst)
        return dst

    loops: list[Timed] = []
    default_threads = torch.get_num_threads()
    say(f"  loop: this process, no Ray, one file after another; torch threads {default_threads} (its default)")
    loop_dir = fresh("loop")
    loops.append(loop_apply(loop_dir, model_path, default_threads, apply_cfg, f"loop, torch {default_threads} threads"))
    say(f"    {loops[-1].faces} masks in {loops[-1].seconds:.1f} s = {loops[-1].rate:.1f} masks/s;  {loops[-1].mon.load()}")
    if not args.quick and default_threads != 1:
        say("  loop, pinned: the same with torch 1 thread (strictly one core, as each Ray actor runs)")
        loops.append(loop_apply(fresh("loop1"), model_path, 1, apply_cfg, "loop, torch 1 thread"))
        say(f"    {loops[-1].faces} masks in {loops[-1].seconds:.1f} s = {loops[-1].rate:.1f} masks/s;  "
            f"{loops[-1].mon.load()}")

    t_ray = _start_ray()
    n_act = apply_cfg.concurrency or max(1, int(RAY_CPUS // apply_cfg.num_cpus))
    say(f"  Ray: local ray.init(num_cpus={RAY_CPUS}) started in {t_ray:.1f} s (not counted); run_xseg_apply with "
        f"{n_act} actors x {apply_cfg.num_cpus:g} CPU (torch {max(1, int(np.ceil(apply_cfg.num_cpus)))} thread each), "
        f"one faces file per task")
    rays: list[Timed] = []
    ray_dirs = []
    for attempt in ("1st", "2nd")[: 1 if args.quick else 2]:
        d = fresh(f"ray-{attempt}")
        r, s = ray_apply(d, model_path, apply_cfg, f"Ray, 2 CPUs, run {attempt}")
        rays.append(r)
        ray_dirs.append(d)
        say(f"    run {attempt}: {r.faces} masks in {r.seconds:.1f} s = {r.rate:.1f} masks/s ({s.files} files "
            f"rewritten, {s.skipped} skipped);  {r.mon.load()}")
    ray.shutdown()

    n, worst = mask_difference(loop_dir, ray_dirs[0])
    say(f"  check: the loop's and Ray's masks of all {n} faces differ by at most {worst:g} of 255"
        + (" (torch thread counts differ: float rounding)" if worst else ""))

    base_rate = loops[0].rate
    ray_rate = statistics.mean(r.rate for r in rays)

    def row(r: Timed) -> list:
        m = r.mon
        return [r.label, r.faces, f"{r.seconds:.1f}", f"{r.rate:.1f}", f"{r.rate / base_rate:.2f}x",
                f"{m.own / m.wall:.2f}", f"{1000 * m.own / r.faces:.2f}", f"{m.other / m.wall:.2f}"]

    say("\n  summary (masks/s; ratio to the loop with default torch threads)")
    say(table(["", "masks", "seconds", "masks/s", "vs loop", "cores used", "CPU ms/mask", "other load (cores)"],
              [row(r) for r in loops + rays]))
    say(f"  => Ray / loop = {ray_rate / base_rate:.2f}x"
        + (f", Ray / pinned loop = {ray_rate / loops[1].rate:.2f}x" if len(loops) > 1 else "")
        + f" (Ray: mean of {len(rays)} run{'s' if len(rays) > 1 else ''})")
    if len(loops) > 1:
        ideal = RAY_CPUS * loops[1].rate
        say(f"  {RAY_CPUS} x the pinned loop's rate = {ideal:.1f} masks/s would take {faces / ideal:.1f} s; Ray's "
            f"time beyond that (actor start, model load, scheduling, uneven files at the end): "
            f"{statistics.mean(r.seconds for r in rays) - faces / ideal:.1f} s")
    say("  cores used / CPU ms per mask: CPU time of this process and its children (the Ray cluster) over wall\n"
        "  time / masks; other load: cores used by other programs during the run.")

    say(f"\n  where the loop's time goes ({loops[0].label}), per mask")
    lp = loops[0]
    other = lp.seconds - sum(lp.stage.values())
    rows = [[k, f"{1000 * v / lp.faces:.2f}", f"{100 * v / lp.seconds:.1f}%"] for k, v in lp.stage.items()]
    rows += [["other", f"{1000 * other / lp.faces:.2f}", f"{100 * other / lp.seconds:.1f}%"],
             ["total", f"{1000 * lp.seconds / lp.faces:.2f}", "100.0%"]]
    say(table(["stage", "ms/mask", "share"], rows))


if __name__ == "__main__":
    main()
