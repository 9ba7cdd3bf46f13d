"""Merging: the per-frame ``MergeSettings`` (DFL's merger options) and the ``dflray merge`` job's config.

The merge job's config covers per-video settings, identity choice, Ray resources and output encoding.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from dflray.config._base import ConfigError, Resources, _check
from dflray.config.extract import ExtractConfig
from dflray.config.load import from_dict
from dflray.face.color import MERGE_CT_CHOICES

# The merger's mode vocabulary: the strings YAML, the CLI and the index use. ``dflray.merge`` implements
# each mode in a registry (``dflray.merge.blend.register_blend_mode``, ``dflray.merge.masks.register_mask_mode``)
# and checks on import that it registers exactly these names; it parses them into typed specs there.
MERGE_MODES = ("original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
MASK_MODES = ("full", "dst", "learned-prd", "learned-dst", "learned-prd*learned-dst", "learned-prd+learned-dst",
              "XSeg-prd", "XSeg-dst", "XSeg-prd*XSeg-dst", "learned-prd*learned-dst*XSeg-prd*XSeg-dst")
# The mask modes that need ``MergeConfig.xseg`` (the merge registry checks it against its parsed specs).
XSEG_MASK_MODES = ("XSeg-prd", "XSeg-dst", "XSeg-prd*XSeg-dst", "learned-prd*learned-dst*XSeg-prd*XSeg-dst")


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
        color_transfer: colour transfer of the swap toward dst: ``none`` or a merge mode of
            ``dflray.face.color`` (``MERGE_CT_CHOICES``).
        sharpen_mode: ``none``, ``box`` or ``gaussian``.
        sharpen_amount: -100..100 (negative blurs).
        denoise: image denoise power (0..500).
        bicubic_degrade: bicubic degrade power (0..100).
        color_degrade: colour degrade power (0..100).
        motion_blur: motion blur power from the face's motion between frames (0..100).
    """

    mode: Literal[MERGE_MODES] = "overlay"
    mask_mode: Literal[MASK_MODES] = "learned-prd*learned-dst"
    erode: int = 0
    blur: int = 0
    face_scale: int = 0
    masked_hist_match: bool = True
    hist_match_threshold: int = 238
    color_transfer: Literal[MERGE_CT_CHOICES] = "rct"
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
class PredictConfig(Resources):
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
        morph_factor: AMP models only: how much of the src identity the swap takes, 0..1 (the first
            ``inter_dims * morph_factor`` channels from the src head, the rest from dst's own code; DFL's
            merger prompt). None: the exported model's own (1.0 unless exported otherwise).
    """

    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    batch_size: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int = 0
    morph_factor: float | None = None

    _min_concurrency = 0  # concurrency=0 runs the model inside each merge worker

    def __post_init__(self) -> None:
        self._check_resources()
        _check(1 <= self.batch_size <= 4096, "batch_size", "must be in 1..4096")
        _check(self.threads >= 0, "threads", "must be >= 0")
        _check(self.morph_factor is None or 0.0 <= self.morph_factor <= 1.0, "morph_factor", "must be in 0..1")


@dataclass(frozen=True)
class MergeWorkersConfig(Resources):
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
        self._check_resources()
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
