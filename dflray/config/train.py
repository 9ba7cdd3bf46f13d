"""Training (DF / LIAE autoencoders on Ray Train): the model, loss, augmentation, optimizer and the root
``TrainConfig`` of ``dflray train``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from dflray.config._base import _check
from dflray.face.color import TRAIN_CT_CHOICES

ARCHS = ("df", "liae", "amp")


@dataclass(frozen=True)
class ModelConfig:
    """DeepFaceLab's autoencoders: SAEHD's DF and LIAE, and AMP; defaults are SAEHD's (``liae-ud``, 128 px).

    Attributes:
        arch: ``df`` (shared encoder and inter, one decoder per identity), ``liae`` (shared encoder
            and decoder; ``inter_ab`` for both identities, ``inter_b`` for dst only) or ``amp`` (DFL's AMP:
            shared encoder and decoder, an ``inter_src`` and an ``inter_dst`` head whose channels are
            mixed, see :mod:`dflray.models.amp`; its layout is fixed, the flags do not apply).
        u: pixel norm on the encoder's code (DFL's ``-u``).
        d: double the output resolution through a pixel-shuffled output at the same compute (``-d``).
        t: deeper encoder/decoder with one more down/up stage and residual blocks (``-t``).
        c: ``x * cos(x)`` activation in the down/up blocks instead of leaky ReLU (``-c``).
        resolution: face crop size in pixels; 64..640, a multiple of 16 (of 32 with ``d`` or ``amp``).
        face_type: face type of the training crops; at most the facesets' face type.
        ae_dims: autoencoder (code) dimensions.
        e_dims: encoder base channels.
        d_dims: decoder base channels.
        d_mask_dims: mask decoder base channels.
        inter_dims: AMP only: channels of the inter heads' output (DFL's default 1024; 32..2048).
        morph_factor: AMP only, training: the share of channels a src sample's code takes from the
            ``inter_src`` head (the rest from ``inter_dst``), a fresh random subset per sample (DFL:
            0.1..0.5, default 0.5). The merge's morph is chosen apart (``merge.predict.morph_factor``).

    Example:
        >>> ModelConfig.from_arch_string("df-ud", resolution=192).arch_string
        'df-ud'
    """

    arch: Literal["df", "liae", "amp"] = "liae"
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
    inter_dims: int = 1024
    morph_factor: float = 0.5

    def __post_init__(self) -> None:
        step = 32 if self.d or self.arch == "amp" else 16
        why = " for amp" if self.arch == "amp" else " with the d flag" if self.d else ""
        _check(64 <= self.resolution <= 640, "resolution", "must be in 64..640")
        _check(self.resolution % step == 0, "resolution", f"must be a multiple of {step}{why}")
        _check(32 <= self.ae_dims <= 1024, "ae_dims", "must be in 32..1024")
        _check(16 <= self.e_dims <= 256 and self.e_dims % 2 == 0, "e_dims", "must be even, in 16..256")
        _check(16 <= self.d_dims <= 256 and self.d_dims % 2 == 0, "d_dims", "must be even, in 16..256")
        _check(2 <= self.d_mask_dims <= 256 and self.d_mask_dims % 2 == 0, "d_mask_dims",
               "must be even, in 2..256")
        _check(32 <= self.inter_dims <= 2048, "inter_dims", "must be in 32..2048")
        _check(0.1 <= self.morph_factor <= 0.5, "morph_factor", "must be in 0.1..0.5 (DFL's range)")

    @property
    def arch_string(self) -> str:
        """DFL's string form, e.g. ``liae-ud`` (``amp``: its layout is fixed, so no flags)."""
        if self.arch == "amp":
            return "amp"
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
        _check(name != "amp" or not flags, "model.arch", f"amp has DFL's fixed layout; flags do not apply ({text!r})")
        return {"arch": name, **{f: f in flags for f in "udtc"}}

    @classmethod
    def from_arch_string(cls, text: str, **kwargs: Any) -> ModelConfig:
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
        ct_mode: colour-transfer src samples toward a random dst sample: ``none`` or a training mode of
            ``dflray.face.color`` (``TRAIN_CT_CHOICES``: none, rct, lct, mkl, idt, sot).
        uniform_yaw: sample faces uniformly over yaw bins instead of uniformly over faces.
    """

    random_warp: bool = True
    rotation: float = 10.0
    scale: float = 0.15
    shift: float = 0.05
    random_src_flip: bool = False
    random_dst_flip: bool = True
    random_hsv_power: float = 0.0
    ct_mode: Literal[TRAIN_CT_CHOICES] = "none"
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
        deterministic: each worker draws its own batches from the faceset (read whole into it), those of
            step ``s`` as a function of ``seed``, rank and ``s``, and reseeds the lr-dropout masks every
            step: the same config on the same hardware gives the same parameters, and a run resumed from
            a checkpoint (after a lost node) ends with the parameters of an uninterrupted one. Slower on
            CPUs (augmentation runs in the training worker, not in Ray Data tasks beside it); for
            reproducible studies and facesets that fit in a worker's memory. Default (false): samples are
            shuffled and augmented afresh, by Ray Data or by the workers (``data``).
        data: where training samples are made (``deterministic`` always draws in the worker). ``ray``:
            Ray Data streams reshuffled epochs augmented in tasks beside the workers (a pipeline start of
            tens of seconds on 2 CPUs, then augmentation overlaps the steps). ``worker``: each worker reads
            the faceset into memory and draws its batches itself (no pipeline to start; augmentation
            between steps). ``auto``: ``worker`` for a short run on a small faceset (at most
            ``SHORT_RUN_SAMPLES`` samples a worker per faceset left to train and at most
            ``SHORT_RUN_FACES`` faces: a fine-tune of a few steps), else ``ray``.
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
    deterministic: bool = False
    data: Literal["auto", "ray", "worker"] = "auto"

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
    def effective(self) -> TrainConfig:
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
