"""``dflray`` command line: parse → config → run. Each subcommand has ``--help``.

Config overrides are trailing ``key.path=value`` arguments (e.g. ``align.face_type=full``), applied on
top of ``--config FILE``. An invalid argument or value exits with status 2 and a one-line error naming
the field.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pickle
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

from dflray.config import (
    MERGE_SETTING_FIELDS,
    ConfigError,
    EvaluateConfig,
    ExportConfig,
    ExtractConfig,
    GenerateConfig,
    MergeConfig,
    ModelConfig,
    TrainConfig,
    XSegApplyConfig,
    XSegTrainConfig,
    load_config,
    to_dict,
)

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=")

EXTRACT_HELP = """\
Extract faces from videos into a Parquet faceset, on the current Ray cluster.

INPUT is a video file, a folder (searched recursively), a glob or a text manifest (one URI per
line), on any fsspec URL (local path, file://, s3:// with s3fs, ...). Trailing key.path=value
arguments override the config, e.g.:

  dflray extract clips/ --out facesets/a align.face_type=full align.size=256 decode.every_n=2

Config sections: decode (every_n, segment_frames, max_frames, concurrency, threads, num_cpus),
detect (detector=auto|retinaface|dlib-hog|dlib-cnn, score_threshold, nms_threshold, input_size,
min_face, weights, device, batch_size, concurrency, num_gpus, num_cpus), landmarks (landmarker,
embedding, batch_size, concurrency, num_cpus), align (face_type=half|mid_full|full|whole_face|head,
size, image_format=jpg|png, jpeg_quality), commit_every, stages=auto|fused|split (auto: on CPU each
face actor decodes and detects itself; with detect.num_gpus > 0 detection gets its own GPU actor pool).

Re-running the same command skips videos already committed and never duplicates rows; a rerun with
other align.* options into a faceset that holds faces is refused (one faceset, one alignment)."""


TRAIN_HELP = """\
Train a DeepFaceLab SAEHD-style autoencoder (DF or LIAE) on a src and a dst faceset with Ray Train
(data-parallel DDP: gloo on CPU, NCCL on GPUs), on the current Ray cluster.

Checkpoints, previews (preview.png, previews/, loss.png) and train_config.yaml go to --out (any
fsspec URL). Re-running with the same --out continues from its newest checkpoint. Trailing
key.path=value arguments override the config, e.g.:

  dflray train --src facesets/a --dst facesets/b --out runs/ab --arch df-ud steps=20000 \\
      model.resolution=192 batch_size=4 num_workers=2 loss.eyes_mouth_prio=true augment.ct_mode=rct

Config: model (arch=df|liae|amp, u, d, t, c, resolution, face_type, ae_dims, e_dims, d_dims,
d_mask_dims; amp only: inter_dims, morph_factor), loss (masked_training, eyes_mouth_prio, blur_out_mask, true_face_power,
face_style_power, bg_style_power, gan_power, gan_patch_size, gan_dims), augment (random_warp,
rotation, scale, shift, random_src_flip, random_dst_flip, random_hsv_power,
ct_mode=none|rct|lct|mkl|idt|sot, uniform_yaw), optim (name=adabelief|rmsprop|adamw, lr,
lr_dropout, clipgrad, weight_decay, warmup), batch_size (per worker), steps, pretrain, init_from,
num_workers, use_gpu, cpus_per_worker, augment_cpus, torch_threads,
mixed_precision=auto|off|bf16|fp16 (auto: bf16 on GPUs and on CPUs with native bf16),
checkpoint_every, keep_checkpoints, preview_every, log_every, max_failures, max_bad_steps, seed,
holdout (share of each src video kept out of training for the held-out SSIM at checkpoints),
deterministic (batches drawn from seed, rank and step in each worker: a resumed run ends as an uninterrupted
one; slower on CPUs), data=auto|ray|worker (where samples are made: Ray Data tasks beside the workers, or
the workers themselves, which skips a pipeline start of tens of seconds; auto: the workers for a short run
on a small faceset)."""

EXPORT_HELP = """\
Export a training checkpoint as an inference-only model: TorchScript (always) and ONNX (--onnx,
when it exports cleanly). The model maps dst faces (N x 3 x R x R, float32 RGB in [0,1], at the
checkpoint's face type and resolution) to (swapped face, swapped face mask, dst mask). Its face
type, resolution and architecture are stored in the file (TorchScript extra file dflray.json; ONNX
metadata) and printed."""

MERGE_HELP = """\
Put the src face of a trained model onto every dst face and write finished videos, their
manipulation-mask videos and a Parquet index, as a Ray Data job over many videos at once.

--model is an exported model (dflray export) or a training --out/checkpoint (exported into
OUT/model.ts). --dst is a faceset written by dflray extract, or videos (files, folders, globs,
manifests), which are extracted into OUT/_faceset first. Each dst video gives OUT/videos/<name>.mp4
(H.264, the dst's frame count, fps, timestamps and audio; frames without a face untouched; provenance
tags in its metadata), OUT/masks/<name>.mp4 (per-frame manipulation mask), OUT/frames/ (per-frame
table), a row in OUT/index.parquet and, on failure, rows in OUT/errors.parquet. Re-running the same
command skips finished videos. Trailing key.path=value arguments override the config; DFL's merger
options may be given by name (mode=seamless is settings.mode=seamless), e.g.:

  dflray merge --model runs/ab --dst facesets/b --out fakes/ab mode=seamless-hist-match \\
      color_transfer=mkl-m erode=20 blur=40 smooth_window=7 predict.num_gpus=1

Settings (DFL's): mode=original|overlay|hist-match|seamless|seamless-hist-match|raw-rgb,
mask_mode=full|dst|learned-prd|learned-dst|learned-prd*learned-dst|learned-prd+learned-dst|XSeg-prd|
XSeg-dst|XSeg-prd*XSeg-dst|learned-prd*learned-dst*XSeg-prd*XSeg-dst (the XSeg modes need xseg=PATH, a
model from dflray xseg train; it runs in each merge worker), erode
(-400..400), blur (0..400), face_scale (-50..50), masked_hist_match, hist_match_threshold,
color_transfer=none|rct|lct|mkl|mkl-m|idt|idt-m|sot-m|mix-m, sharpen_mode=none|box|gaussian,
sharpen_amount, denoise, bicubic_degrade, color_degrade, motion_blur. Per-video draws:
vary='[{field: mode, choices: [overlay, seamless]}, {field: erode, low: -20, high: 40}]' with seed.
Config: smooth_window (0 or odd >= 3), fill_gaps, identity (swap=dominant|reference|all, reference,
threshold), predict (concurrency, num_gpus, num_cpus, batch_size, device, precision=fp32|bf16|fp16,
threads, morph_factor: an AMP model's share of the source identity, 0..1), workers (concurrency,
num_cpus, batch_frames), output (crf, preset, lossless, masks, mask_crf), xseg, dataset_id,
retry_errors (a rerun skips failed videos too unless true),
extract (the ExtractConfig used for video --dst), quality (measure, source, sample_frames).

Quality: quality.measure=true measures every merged video against its dst video, its mask and the
source identity (the dominant person of the src faceset the model was trained on, read from the
training output's train_config.yaml; or quality.source=FACESET, which also turns measuring on) and
records swap_success (share of sampled frames whose face, re-detected in the fake, is recognised as
the source person: nearer the source than the face it replaced and under dlib's 0.6), identity
distances, pose and expression error, flicker and seam in OUT/index.parquet; the summary prints the
mean and distribution of swap_success. It needs output.masks=true; a missing or unusable source
fails before any video is merged."""


def _merge_overrides(overrides: list[str]) -> list[str]:
    """DFL merger option names given bare (``mode=seamless``) go to ``settings.``."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        out.append(f"settings.{item}" if key in MERGE_SETTING_FIELDS else item)
    return out


def _expand_arch(overrides: list[str], arch: str | None) -> list[str]:
    """DFL's ``liae-ud`` string form (``--arch`` or ``model.arch=``) → typed ``model.*`` fields, once, here."""
    out = []
    if arch:
        out += [f"model.{k}={str(v).lower()}" for k, v in ModelConfig.parse_arch(arch).items()]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "model.arch" and "-" in value:
            out += [f"model.{k}={str(v).lower()}" for k, v in ModelConfig.parse_arch(value).items()]
        else:
            out.append(item)
    return out

GENERATE_HELP = """\
Turn a plan of real videos into a labelled, quality-measured forgery dataset for deepfake-detection
research, as one resumable Ray job: extract every video once; give unlabelled videos an identity
(clustering dlib embeddings); split identities into train/val/test (no person in two splits); pair
source identities with target videos (random, nearest in appearance, or within a group); train the
models the plan needs (Ray Train, models.concurrency at a time, optionally from one pretrained base);
make each fake with its method (methods: a mix of DeepFaceLab models, df, liae, quick96 and amp,
and training-free methods, landmark-warp, sbi, xray-blend and onnx-swap (your one-shot ONNX swapper),
by shares or by fakes_per_video per method; default: the trained model only) and merge it
with settings drawn per video; measure each fake (swap_success: the share of sampled
frames whose face reads as the source person; identity distance to source and target, pose and
expression error, flicker, seam) and apply quality gates; perturb real and fake videos
alike (DeeperForensics-1.0's 7 distortions x 5 levels, mixes of 2-4) and write them at FaceForensics++
compression levels (c0, c23, c40) into the layout (flat, dfdc or ffpp); write index.parquet,
frames.parquet, labels.json (DFDC format; the layout's own metadata.json / splits files), errors.parquet and
report.html (swap_success at the top). The published root holds only the layout and these tables: working
files go to --work (default OUT.work, beside it). The summary printed at the end gives the
published fakes' mean swap_success and its distribution.

PLAN.yaml is a GenerateConfig, e.g.:

  videos: [clips/a.mp4, {uri: clips/b.mp4, identity: bob, attributes: {gender: m}}]  # or manifest: FILE
  splits: {train: 0.8, val: 0.1, test: 0.1}
  pairing: {policy: nearest, fakes_per_video: 2, exclude: [[alice, bob]]}
  models: {per: source, base: pretrain, concurrency: 4, train: {steps: 20000, model: {resolution: 128}}}
  methods: [{name: liae, share: 0.5}, {name: landmark-warp, share: 0.25}, {name: sbi, share: 0.25}]
  # or every video faked by every method: [{name: liae, fakes_per_video: 2}, {name: sbi, fakes_per_video: 1}]
  merge: {vary: [{field: mode, choices: [overlay, seamless]}, {field: erode, low: -10, high: 30}]}
  # XSeg mask modes: merge: {xseg: runs/xseg/xseg.pt, vary: [{field: mask_mode, choices: [dst, XSeg-dst]}]}
  perturb: {compression: [c0, c23, c40], fraction: 0.5, mix_fraction: 0.3}
  quality: {gates: [{metric: swap_success, min: 0.8, methods: [liae, landmark-warp]}, {metric: seam, max: 1.5}],
            action: flag}

Relative paths are relative to the working directory (manifest entries: to the manifest's folder).
Re-running the same command finishes what is missing; another plan into the same --out is refused.
Trailing key.path=value arguments override the plan (e.g. models.train.steps=500)."""

EXPORT_DATASET_HELP = """\
Export a dataset made by dflray generate in a detection benchmark's own format, read by its code
unchanged. --format deepfakebench (SCLBD/DeepfakeBench): for every published video of one compression
level, `frames` evenly spaced face crops aligned as DeepfakeBench aligns them (dlib points 37, 44, 30,
49, 55 onto its five-point template at scale 1.3, `size` px): OUT/frames/<video>/<frame>.png, the
manipulation mask in the crop OUT/masks/<video>/<frame>.png (0/255; all 0 for real videos) and 81
landmarks in crop pixels OUT/landmarks/<video>/<frame>.npy (dlib's 68 + 13 estimated forehead points);
OUT/<name>.json (its dataset JSON: labels <name>_real and <name>_fake, splits train/val/test, paths
starting with `root`; with several forgery methods also OUT/<name>-<method>.json, the reals and one
method's fakes labelled <name>_<method>, as DeepfakeBench splits FF++), OUT/label_dict.yaml and
OUT/deepfakebench.yaml (what to paste into DeepfakeBench's configs: image files, not LMDB). One Ray
task per video; a video that fails is listed in OUT/errors.json and the others are exported; a rerun
exports only what is missing and writes identical files. Trailing key=value arguments set the options,
e.g.:

  dflray export-dataset out/dataset --format deepfakebench --out DeepfakeBench/datasets/rgb/mine \\
      name=mine frames=32 compression=c23 'splits=[train, test]'

Options (ExportConfig): frames (default 32); size (256); compression (default c23 when the dataset has
it, else its first level); name (default the dataset id; no 'frames' in it, no FF++ name); root (OUT as
DeepfakeBench's working directory sees it, starting with '.'; default ./datasets/rgb/<name>); splits (the
dataset's splits to export); num_cpus (per export actor)."""


EVALUATE_HELP = """\
How hard is each slice of a generated dataset for a standard detector? Train a reference frame-level
detector (EfficientNet-B0 from efficientnet_pytorch, one logit, BCE; from scratch or from weights=PATH)
with Ray Train on the face crops of the train split (frames evenly spaced crops per video, DeepfakeBench's
alignment, cached in the dataset's work location), score the test split's crops, and report frame- and
video-level AUC (a video's score: the mean of its frames') with bootstrap intervals (videos resampled),
over the test set and per method, compression level, perturbation kind (a mix counts under each kind)
and quality bucket (terciles of the fakes' swap_success). Compression and perturbation slices compare the
slice's reals and fakes; method and quality slices compare the slice's fakes with all test reals (reals
have neither). Writes DATASET/evaluation.parquet and an Evaluation section of DATASET/report.html; a video
whose crops fail is listed and left out. Nothing is downloaded.

Holdout: identity-disjoint splits of a tiny dataset can leave the test split without fakes (the built-in
sample puts every video in train). Then a seeded share `holdout` (default 0.5; 0: fail instead) of the
train split's real videos, each with its fakes, is tested instead and the results say protocol=holdout:
a within-split holdout, not identity-disjoint.

Cross-dataset: --train-dataset OTHER trains on OTHER's train split and tests on DATASET (minus any video
made from a real video that is tested). Trailing key=value arguments set the options, e.g.:

  dflray evaluate out/dataset epochs=10 size=224 frames=32 weights=efficientnet-b0-imagenet.pth
  dflray evaluate out/dataset_b --train-dataset out/dataset_a use_gpu=true num_workers=2

Options (EvaluateConfig): size (crop and input side, default 128), frames (per video, 32), epochs (3; 0
scores given weights untrained), batch_size (32), lr (1e-3), weight_decay, weights (a detector.pt, a
folder holding one, or an EfficientNet-B0 state dict), holdout (0.5), balance (weight fakes by
reals/fakes), bootstrap (1000 replicates), confidence (0.95), seed, num_workers, use_gpu,
cpus_per_worker, torch_threads, crop_cpus. A rerun with the same options reuses the cached crops and the
trained detector. A from-scratch B0 on a small dataset is a weak reference: compare slices with each
other rather than read its AUCs as absolute."""


def _split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    plain = [x for x in items if not _OVERRIDE.match(x)]
    overrides = [x for x in items if _OVERRIDE.match(x)]
    return plain, overrides


def _config_keys(config: type) -> str:
    """``Config: a, b, c.`` — the config class's own fields, for a subcommand's help."""
    import dataclasses

    return f"Config ({config.__name__}): {', '.join(f.name for f in dataclasses.fields(config))}."


def _job_options(p: argparse.ArgumentParser, config: type | None) -> None:
    """The options every Ray job shares: ``--config`` (its root config class), ``--address``, ``--print-config``."""
    if config is not None:
        p.add_argument("--config", metavar="FILE", help=f"YAML config ({config.__name__}); overrides apply on top")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument("--print-config", action="store_true",
                   help=f"print the resolved {'config' if config else 'plan'} as YAML and exit")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dflray", description="DeepFaceLab's face-swap pipeline as a Ray batch "
                                "system, for labelled deepfake-detection datasets.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("extract", help="videos → Parquet faceset (detect, landmarks, align, masks)",
                       description=EXTRACT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="videos, folders, globs or manifests; "
                   "key.path=value items override the config")
    e.add_argument("--out", required=True, metavar="URI", help="faceset folder (any fsspec URL)")
    _job_options(e, ExtractConfig)

    pv = sub.add_parser("preview", help="contact sheet of a faceset's aligned faces with landmarks",
                        description="Draw a grid of aligned faces from a faceset with their landmarks (and hull "
                        "mask outline), so a person can check what was extracted.")
    pv.add_argument("faceset", metavar="FACESET", help="faceset URI written by `dflray extract`")
    pv.add_argument("--out", required=True, metavar="PNG", help="output image path or URL")
    pv.add_argument("--n", type=int, default=48, help="faces to show (default 48, spread over the faceset)")
    pv.add_argument("--cols", type=int, default=8, help="columns (default 8)")
    pv.add_argument("--tile", type=int, default=160, help="tile side in pixels (default 160)")

    t = sub.add_parser("train", help="train a DF/LIAE autoencoder on src + dst facesets (Ray Train, DDP)",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("inputs", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. steps=5000")
    t.add_argument("--src", required=True, metavar="FACESET", help="src faceset (the identity put onto dst)")
    t.add_argument("--dst", metavar="FACESET", help="dst faceset (optional with pretrain=true)")
    t.add_argument("--out", required=True, metavar="URI", help="training output: checkpoints, previews")
    t.add_argument("--arch", metavar="ARCH", help="DFL architecture string, e.g. liae-ud, df-udt, amp (sets model.*)")
    t.add_argument("--resume", action="store_true", help="require a checkpoint in --out to continue from "
                   "(a rerun continues from one anyway)")
    _job_options(t, TrainConfig)

    x = sub.add_parser("export", help="checkpoint → inference-only TorchScript (and ONNX) model",
                       description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("checkpoint", metavar="CKPT", help="a training --out, a checkpoint folder or its model.pt")
    x.add_argument("--out", required=True, metavar="PATH", help="output file, e.g. model.ts (ONNX beside it "
                   "as .onnx)")
    x.add_argument("--onnx", action="store_true", help="also export ONNX and check it against TorchScript")

    m = sub.add_parser("merge", help="model + dst videos → swapped videos, mask videos, index.parquet",
                       description=MERGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("inputs", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. mode=seamless")
    m.add_argument("--model", required=True, metavar="MODEL", help="exported model (.ts) or training output/checkpoint")
    m.add_argument("--dst", required=True, nargs="+", metavar="DST", help="dst faceset, or videos/folders/globs/manifests")
    m.add_argument("--out", required=True, metavar="URI", help="output root (any fsspec URL)")
    _job_options(m, MergeConfig)

    g = sub.add_parser("generate", help="plan of real videos → labelled, measured, perturbed forgery dataset",
                       description=GENERATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("inputs", nargs="+", metavar="PLAN", help="PLAN.yaml, then key.path=value overrides")
    g.add_argument("--out", required=True, metavar="URI", help="dataset root (any fsspec URL): the published layout "
                   "and the dataset's tables only")
    g.add_argument("--work", metavar="URI", help="working files (faceset, models, lossless fakes, records); default "
                   "beside --out (OUT.work), never inside it; a rerun finds it in OUT/generate.json")
    g.add_argument("--layout", choices=["flat", "dfdc", "ffpp"], help="published structure (default: the plan's "
                   "layout, flat = videos/ with its metadata.json): dfdc = dfdc_<split>_part_<n>/ with metadata.json "
                   "each, parts numbered once across splits (dfdc_part_size, 0: fit in 50); ffpp = "
                   "original_sequences/youtube/ + manipulated_sequences/ + splits/ (ffpp_source, "
                   "ffpp_numeric_names)")
    g.add_argument("--no-report", action="store_true", help="skip report.html")
    _job_options(g, None)

    r = sub.add_parser("report", help="self-contained HTML report of a generated dataset",
                       description="Write a self-contained HTML page about a dataset made by dflray generate: "
                       "counts per split and label, metric histograms, and a sortable table of fakes with real/fake "
                       "thumbnails side by side and their quality metrics.")
    r.add_argument("dataset", metavar="DATASET", help="dataset root (holds index.parquet)")
    r.add_argument("--out", required=True, metavar="HTML", help="output file, e.g. report.html")
    r.add_argument("--max-rows", type=int, default=500, help="fakes in the table at most (default 500)")

    di = sub.add_parser("import-dfl", help="DeepFaceLab aligned faces (with XSeg labels) → Parquet faceset",
                        description="Import a DeepFaceLab aligned folder (JPEGs with DFL's embedded metadata: "
                        "landmarks, source file, rect and landmarks, image_to_face_mat, face type, XSeg polygons "
                        "and masks) into a Parquet faceset that training, merging and XSeg use. The metadata is "
                        "a pickle: it is read with a restricted unpickler that admits only plain containers, "
                        "numbers, strings and numeric numpy arrays, so a crafted file becomes an error row and "
                        "never runs code. A rerun on the same --out does nothing.")
    di.add_argument("aligned", metavar="ALIGNED_DIR", help="DFL's aligned folder (any fsspec URL)")
    di.add_argument("--out", required=True, metavar="FACESET", help="faceset folder to write")

    xs = sub.add_parser("xseg", help="learned face segmentation (XSeg): train, apply",
                        description="DeepFaceLab's XSeg: a U-Net that segments the visible face, so that training "
                        "and merging ignore hands, glasses and hair over it. apply fills a faceset's xseg column "
                        "(used by dflray train's masked loss); the merge uses the model itself: dflray merge ... "
                        "mask_mode=XSeg-dst xseg=OUT/xseg.pt.")
    xsub = xs.add_subparsers(dest="xseg_command", required=True, metavar="ACTION")
    xt = xsub.add_parser("train", help="train XSeg on facesets (Ray Train)", formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Train XSeg on one or more facesets of one face type with Ray Train. Faces with "
                         "a user label (xseg_label: polygons, or imported from DeepFaceLab) train on it; the others, "
                         "with self_supervised=true, on synthetic occluders (shapes, image crops, hands, glasses, "
                         "microphones, hair) pasted over their landmark hull, the target being the hull minus the "
                         "occluders. Writes OUT/xseg.pt; a rerun continues from the newest checkpoint.\n\n"
                         + _config_keys(XSegTrainConfig))
    xt.add_argument("inputs", nargs="+", metavar="FACESET", help="facesets, then key.path=value overrides")
    xt.add_argument("--out", required=True, metavar="URI", help="training output (checkpoints, xseg.pt)")
    _job_options(xt, XSegTrainConfig)
    xa = xsub.add_parser("apply", help="write the XSeg mask of every face into a faceset (Ray Data)",
                         description="Predict every face's visible-face mask with a trained XSeg model and write it "
                         "into the faceset's xseg column (PNG, crop size) with the model's id, file by file. Applying "
                         "the same model again changes nothing. " + _config_keys(XSegApplyConfig))
    xa.add_argument("inputs", nargs="+", metavar="FACESET", help="the faceset, then key.path=value overrides")
    xa.add_argument("--model", required=True, metavar="XSEG", help="xseg.pt (or the xseg train output)")
    _job_options(xa, XSegApplyConfig)

    xd = sub.add_parser("export-dataset", help="generated dataset → a benchmark's format (DeepfakeBench: face "
                        "crops, masks, landmarks, dataset JSON)", description=EXPORT_DATASET_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    xd.add_argument("inputs", nargs="+", metavar="DATASET", help="dataset root (dflray generate --out), then "
                    "key=value options")
    xd.add_argument("--out", required=True, metavar="DIR", help="export folder (any fsspec URL)")
    xd.add_argument("--format", required=True, choices=["deepfakebench"], help="the benchmark's format")
    _job_options(xd, ExportConfig)

    ev = sub.add_parser("evaluate", help="train a reference detector (EfficientNet-B0) on a generated dataset and "
                        "report AUC per slice", description=EVALUATE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("inputs", nargs="+", metavar="DATASET", help="dataset root (dflray generate --out) to test on, "
                    "then key=value options")
    ev.add_argument("--train-dataset", metavar="OTHER", help="train on this generated dataset's train split instead "
                    "(cross-dataset evaluation)")
    ev.add_argument("--no-report", action="store_true", help="do not rebuild DATASET/report.html")
    _job_options(ev, EvaluateConfig)

    s = sub.add_parser("sample", help="write the built-in sample clips",
                       description="Write the built-in sample clips (animated public-domain portraits shipped "
                       "by scikit-image and matplotlib) as H.264 videos.")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.mp4 (any fsspec URL)")
    s.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4)")
    s.add_argument("--size", type=int, default=384, help="frame side in pixels (default 384)")
    s.add_argument("--variants", type=int, default=1, help="clips per portrait, each a different camera move "
                   "(<name>.mp4, <name>_2.mp4, ...; default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Inputs and key=value overrides may come before or after options: collect the leftovers.
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or not hasattr(args, "inputs")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.inputs = list(args.inputs) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _run(args, parser)
    except ConfigError as e:
        parser.exit(2, f"dflray {args.command}: error: {e}\n")
    except ValueError as e:
        parser.exit(2, f"dflray {args.command}: error: {e}\n")
    except OSError as e:
        if e.errno not in _PATH_ERRNOS:
            raise
        # A path the user gave that cannot be used: one line (the traceback only with -v).
        logging.getLogger("dflray").debug("dflray %s failed", args.command, exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        parser.exit(2, f"dflray {args.command}: error: {where}{e.strerror or e}\n")
    except pickle.UnpicklingError:
        # A safety net for a weights-only torch.load not given a path: its message invites a retry with
        # weights_only=False, which would run the file's code, so none of it is shown (not even with -v).
        parser.exit(2, f"dflray {args.command}: error: a file given is not a dflray model or checkpoint, or is "
                    "unsafe to load (a weights-only load refused it; nothing in it was run)\n")
    return 1


# What the file system says about a path the user gave (missing, a file where a folder belongs, no
# permission, read-only, full): the user's to fix, told in one line. Other OS errors are bugs: traceback.
_PATH_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _check_out(uri: str, kind: str, option: str = "--out") -> None:
    """Refuses, before any work, a local output path the command could not write.

    ``kind`` is ``dir`` (a folder the command fills; created when missing) or ``file`` (one file it
    writes). A folder output must not be an existing file, a file output not an existing folder; the
    nearest existing folder at or above it must be writable (not on a read-only file system). Object-store
    URLs are left to the stage's own write check.

    Raises:
        ConfigError: naming ``option`` and the path.
    """
    if "://" in uri and not uri.startswith("file://"):
        return
    path = os.path.abspath(uri.removeprefix("file://"))
    if os.path.exists(path):
        if kind == "dir" and not os.path.isdir(path):
            raise ConfigError(option, f"{uri} is an existing file, not a folder")
        if kind == "file" and os.path.isdir(path):
            raise ConfigError(option, f"{uri} is a folder; give a file name")
        probe = path
    else:
        probe = os.path.dirname(path)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise ConfigError(option, f"{uri}: {probe} is an existing file, not a folder")
    if not os.access(probe, os.W_OK | (os.X_OK if os.path.isdir(probe) else 0)):
        statvfs = getattr(os, "statvfs", None)
        read_only = statvfs is not None and bool(statvfs(probe).f_flag & getattr(os, "ST_RDONLY", 1))
        raise ConfigError(option, f"{uri}: {probe} is not writable "
                          f"({'read-only file system' if read_only else 'permission denied'})")


# ------------------------------------------------------------------------------------------------
# The subcommands as a table: how each reads its config (class, file, overrides) and what runs it.
# ``--config``, ``--print-config`` and validation are done once, in ``_run``, from the config class.


@dataclass(frozen=True)
class Command:
    """One subcommand: its root config class (None: it has none) and the two steps around it.

    Attributes:
        config: the root config dataclass the command's options load into.
        inputs: ``args → (YAML file or None, key.path=value overrides)``; checks the positional inputs
            (raising ``ConfigError`` naming them) and keeps what the runner needs on ``args``.
        run: ``(args, cfg) → exit code``; imports its stage only here, so ``--help`` and
            ``--print-config`` stay fast and need no Ray.
        check: a check of the loaded config that needs more than its class (a stage's registry);
            raises ``ConfigError``.
        out: what ``--out`` is: ``dir`` (a folder the command fills), ``file`` (one file) or None (no
            ``--out``); a local one that cannot be written is refused before the command runs.
        config_file: what ``inputs``' YAML file was given as, named when it cannot be read.
    """

    config: type | None
    inputs: Callable[[argparse.Namespace], tuple[str | None, list[str]]] | None
    run: Callable[[argparse.Namespace, Any], int]
    check: Callable[[Any], None] | None = None
    out: str | None = "dir"
    config_file: str = "--config"


def _extract_inputs(args) -> tuple[str | None, list[str]]:
    args.videos, overrides = _split_overrides(args.inputs)
    if not args.videos:
        raise ConfigError("INPUT", "at least one input video, folder, glob or manifest is required")
    return args.config, overrides


def _check_extract(cfg: ExtractConfig) -> None:
    from dflray.detect import detector_names

    if cfg.detect.detector not in ("auto", *detector_names()):
        raise ConfigError("detect.detector", f"unknown detector {cfg.detect.detector!r} "
                          f"(known: auto, {', '.join(detector_names())})")


def _run_extract(args, cfg: ExtractConfig) -> int:
    from dflray.extract import run_extract

    summary = run_extract(args.videos, args.out, cfg, address=args.address)
    print(summary)
    return 1 if summary.videos and summary.by_status.get("error", 0) == summary.videos else 0


def _train_inputs(args) -> tuple[str | None, list[str]]:
    inputs, overrides = _split_overrides(args.inputs)
    if inputs:
        raise ConfigError(inputs[0], "train takes no positional inputs other than key.path=value overrides")
    return args.config, _expand_arch(overrides, args.arch)


def _run_train(args, cfg: TrainConfig) -> int:
    from dflray.train import run_train

    print(run_train(args.src, args.dst, args.out, cfg, resume=args.resume, address=args.address))
    return 0


def _merge_inputs(args) -> tuple[str | None, list[str]]:
    dst, more = _split_overrides(args.dst)  # `--dst a b mode=x`: nargs swallows trailing overrides
    inputs, overrides = _split_overrides(args.inputs)
    if inputs:
        raise ConfigError(inputs[0], "merge takes no positional inputs other than key.path=value overrides")
    if not dst:
        raise ConfigError("--dst", "give a dst faceset or videos")
    args.dst = dst
    return args.config, _merge_overrides(more + overrides)


def _run_merge(args, cfg: MergeConfig) -> int:
    from dflray.extract import run_extract
    from dflray.merge.pipeline import run_merge

    # Merge is a sibling of extraction: dst videos are extracted by the stage the entry point hands it.
    summary = run_merge(args.model, args.dst, args.out, cfg, address=args.address, extractor=run_extract)
    print(summary)
    return 1 if summary.videos and not summary.by_status.get("ok") else 0  # some failures: see errors


def _generate_inputs(args) -> tuple[str | None, list[str]]:
    inputs, overrides = _split_overrides(args.inputs)
    if len(inputs) != 1:
        raise ConfigError("PLAN", "give exactly one PLAN.yaml (then key.path=value overrides)")
    return inputs[0], [*overrides, f"layout={args.layout}"] if args.layout else overrides


def _run_generate(args, cfg: GenerateConfig) -> int:
    from dflray.dataset.pipeline import run_generate

    summary = run_generate(cfg, args.out, address=args.address, report=not args.no_report, work=args.work)
    print(summary)
    return 1 if summary.published and not summary.published.get("ok") else 0


def _xseg_inputs(args) -> tuple[str | None, list[str]]:
    args.facesets, overrides = _split_overrides(args.inputs)
    if args.xseg_command == "train" and not args.facesets:
        raise ConfigError("FACESET", "give at least one faceset")
    if args.xseg_command == "apply" and len(args.facesets) != 1:
        raise ConfigError("FACESET", "give exactly one faceset")
    return args.config, overrides


def _run_xseg_train(args, cfg: XSegTrainConfig) -> int:
    from dflray.train.xseg import run_xseg_train

    print(run_xseg_train(args.facesets, args.out, cfg, address=args.address))
    return 0


def _run_xseg_apply(args, cfg: XSegApplyConfig) -> int:
    from dflray.extract.xseg_apply import run_xseg_apply

    print(run_xseg_apply(args.facesets[0], args.model, cfg, address=args.address))
    return 0


def _run_report(args, _cfg) -> int:
    from dflray.dataset.report import build_report

    info = build_report(args.dataset, args.out, max_rows=args.max_rows)
    print(f"report: {info} → {args.out}")
    return 0


def _run_import_dfl(args, _cfg) -> int:
    from dflray.extract.dfl_import import run_import_dfl

    summary = run_import_dfl(args.aligned, args.out)
    print(summary)
    return 1 if not summary.skipped and summary.faces == 0 else 0


def _run_export(args, _cfg) -> int:
    from dflray.artifacts.export import export_model

    for line in export_model(args.checkpoint, args.out, onnx=args.onnx):
        print(line)
    return 0


def _run_preview(args, _cfg) -> int:
    from dflray.extract.preview import contact_sheet

    n = contact_sheet(args.faceset, args.out, n=args.n, cols=args.cols, tile=args.tile)
    print(f"preview: {n} faces → {args.out}")
    return 0


def _export_dataset_inputs(args) -> tuple[str | None, list[str]]:
    inputs, overrides = _split_overrides(args.inputs)
    if len(inputs) != 1:
        raise ConfigError("DATASET", "give exactly one dataset root (then key=value options)")
    args.dataset = inputs[0]
    return args.config, [*overrides, f"format={args.format}"]


def _run_export_dataset(args, cfg: ExportConfig) -> int:
    from dflray.dataset.export import run_export

    summary = run_export(cfg, args.dataset, args.out, address=args.address)
    print(summary)
    return 1 if summary.videos and summary.failures and not (summary.exported + summary.skipped) else 0


def _evaluate_inputs(args) -> tuple[str | None, list[str]]:
    inputs, overrides = _split_overrides(args.inputs)
    if len(inputs) != 1:
        raise ConfigError("DATASET", "give exactly one dataset root (then key=value options)")
    args.dataset = inputs[0]
    return args.config, overrides


def _run_evaluate(args, cfg: EvaluateConfig) -> int:
    from dflray.dataset.evaluate import run_evaluate

    print(run_evaluate(args.dataset, cfg, train_dataset=args.train_dataset, address=args.address,
                       report=not args.no_report))
    return 0


def _run_sample(args, _cfg) -> int:
    from dflray.sample import make_sample

    for uri in make_sample(args.out, seconds=args.seconds, size=args.size, variants=args.variants):
        print(uri)
    return 0


# command (or "xseg train"/"xseg apply") → how it runs
COMMANDS: dict[str, Command] = {
    "extract": Command(ExtractConfig, _extract_inputs, _run_extract, _check_extract),
    "train": Command(TrainConfig, _train_inputs, _run_train),
    "merge": Command(MergeConfig, _merge_inputs, _run_merge),
    "generate": Command(GenerateConfig, _generate_inputs, _run_generate, config_file="PLAN"),
    "xseg train": Command(XSegTrainConfig, _xseg_inputs, _run_xseg_train),
    "xseg apply": Command(XSegApplyConfig, _xseg_inputs, _run_xseg_apply, out=None),
    "export": Command(None, None, _run_export, out="file"),
    "report": Command(None, None, _run_report, out="file"),
    "import-dfl": Command(None, None, _run_import_dfl),
    "preview": Command(None, None, _run_preview, out="file"),
    "sample": Command(None, None, _run_sample),
    "export-dataset": Command(ExportConfig, _export_dataset_inputs, _run_export_dataset),
    "evaluate": Command(EvaluateConfig, _evaluate_inputs, _run_evaluate, out=None),
}


def _run(args, parser) -> int:
    name = f"xseg {args.xseg_command}" if args.command == "xseg" else args.command
    cmd = COMMANDS.get(name)
    if cmd is None:
        parser.error(f"unknown command {name}")
    cfg = None
    if cmd.config is not None:
        path, overrides = cmd.inputs(args)
        cfg = load_config(cmd.config, path, overrides, option=cmd.config_file)
        if cmd.check is not None:
            cmd.check(cfg)
        if getattr(args, "print_config", False):
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
    if cmd.out is not None and getattr(args, "out", None):
        _check_out(args.out, cmd.out)
    if getattr(args, "work", None):
        _check_out(args.work, "dir", "--work")
    return cmd.run(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
