"""Dataset generation (``dflray generate PLAN.yaml``): splits, pairing, models, perturbation and the root
``GenerateConfig``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from dflray.config._base import Resources, _check
from dflray.config.extract import ExtractConfig
from dflray.config.merge import MergeConfig
from dflray.config.quality import QualityConfig
from dflray.config.train import TrainConfig

PERTURB_KINDS = ("saturation", "contrast", "block", "noise", "blur", "resolution", "compression")
COMPRESSION_LEVELS = ("c0", "c23", "c40")  # FaceForensics++: raw (lossless), HQ (crf 23), LQ (crf 40)


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
class ModelsConfig(Resources):
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
        self._check_resources()
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
class MethodEntry:
    """One forgery method of the plan's mix (``dflray.methods``).

    Attributes:
        name: a registered method: ``df``, ``liae`` or ``amp`` (a DeepFaceLab model trained per source
            identity, or per pair with ``models.per=pair``, from ``models.train`` with this architecture),
            ``quick96`` (DFL's fixed small DF model), ``landmark-warp``, ``sbi``, ``xray-blend``, ``onnx-swap``
            (no training).
        share: the share of the plan's fakes made with it; the shares of a plan sum to 1 (a plan of one
            method may leave it out).
        fakes_per_video: instead of shares: this many of each real video's fakes are made with this method
            (FaceForensics++'s design: every target video faked by every method, from the same source
            identities). At most ``pairing.fakes_per_video``, the source identities drawn per video: a
            video's fakes of one method each have their own source, and its j-th source serves every
            method with ``fakes_per_video`` > j. Give every method of a plan either a share or this.
        settings: the method's own settings (``dflray.methods``; the model methods have none: their
            settings are ``models.train`` and ``merge``).
    """

    name: str
    share: float | None = None
    fakes_per_video: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.share is None or 0 < self.share <= 1, "share", f"must be in (0, 1], got {self.share}")
        _check(self.fakes_per_video is None or self.fakes_per_video >= 1, "fakes_per_video",
               f"must be >= 1, got {self.fakes_per_video}")
        _check(self.share is None or self.fakes_per_video is None, "share",
               "give a share or a fakes_per_video, not both")


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
        dfdc_part_size: videos per ``dfdc_<split>_part_<n>/`` folder; 0 (default): the smallest part that
            fits the dataset in DFDC's 50 parts. Parts are numbered once across the splits, train first; a
            size that needs more than 50 numbers on, more than 256 is refused (readers keep 8 bits).
        ffpp_source: the ``original_sequences/<source>/`` name of the real videos (FF++: ``youtube``).
        ffpp_numeric_names: FF++'s numeric video names (``000``, ``001``, …, train first; more digits past
            1000) instead of letter ids.
        identity: clustering of unlabelled videos.
        splits: identity-disjoint split fractions.
        pairing: who goes onto whom.
        models: the swap models.
        extract: extraction of every video (once).
        merge: merge settings, per-video draws and resources.
        perturb: the final perturbation and compression stage.
        quality: metrics and gates.
        methods: the forgery methods and their shares of the fakes (``[{name: liae, share: 0.5},
            {name: sbi, share: 0.5}]``); each fake's method is drawn once, by exact shares over a seeded
            order of the fakes, and kept in the plan. Empty (default): every fake from the trained model
            (``models.train.model.arch``).
    """

    videos: tuple[VideoEntry | str, ...] = ()
    manifest: str = ""
    dataset_id: str = ""
    seed: int = 0
    layout: Literal["flat", "dfdc", "ffpp"] = "flat"
    dfdc_part_size: int = 0
    ffpp_source: str = "youtube"
    ffpp_numeric_names: bool = False
    identity: IdentityClusterConfig = field(default_factory=IdentityClusterConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    methods: tuple[MethodEntry, ...] = ()

    @property
    def methods_per_video(self) -> bool:
        """Whether the mix gives fakes per video per method (``fakes_per_video``) rather than shares."""
        return bool(self.methods) and self.methods[0].fakes_per_video is not None

    @property
    def fakes_per_real(self) -> int:
        """The most fakes the plan makes of one real video."""
        if self.methods_per_video:
            return sum(m.fakes_per_video for m in self.methods)
        return self.pairing.fakes_per_video

    def method_shares(self) -> list[tuple[str, float]]:
        """``(name, share)`` of each method of a share mix (a lone method without one: 1)."""
        return [(m.name, 1.0 if m.share is None else m.share) for m in self.methods]

    def _check_method_mix(self, names: list[str]) -> None:
        if not self.methods:
            return
        per_video = [m.fakes_per_video is not None for m in self.methods]
        _check(all(per_video) or not any(per_video), "methods",
               "give every method a share, or every method a fakes_per_video, not a mix of both")
        if all(per_video):
            for i, m in enumerate(self.methods):
                _check(m.fakes_per_video <= self.pairing.fakes_per_video, f"methods[{i}].fakes_per_video",
                       f"{m.fakes_per_video} is more than pairing.fakes_per_video ({self.pairing.fakes_per_video}), "
                       "the source identities drawn per video: each of a video's fakes of one method has its own")
            return
        for i, m in enumerate(self.methods):
            _check(m.share is not None or len(self.methods) == 1, f"methods[{i}].share",
                   "give a share (or every method a fakes_per_video)")
        total = sum(share for _, share in self.method_shares())
        _check(abs(total - 1) < 1e-6, "methods", f"the shares must sum to 1, got {total:g} ({', '.join(names)})")

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        _check(len(set(names)) == len(names), "methods", f"a method is listed twice: {names}")
        self._check_method_mix(names)
        _check(bool(self.videos) != bool(self.manifest), "videos", "give either videos or manifest")
        _check(0 <= self.seed < 2**63, "seed", "must be in 0..2**63-1")
        _check(self.dfdc_part_size >= 0, "dfdc_part_size", "must be >= 0 (0: fit the dataset in 50 parts)")
        _check(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.ffpp_source) is not None, "ffpp_source",
               "may only hold letters, digits, '.', '_' and '-'")
        _check(re.fullmatch(r"[A-Za-z0-9._-]{0,128}", self.dataset_id) is not None, "dataset_id",
               "may only hold letters, digits, '.', '_' and '-' (at most 128)")
        _check(self.layout != "dfdc" or len(self.perturb.compression) == 1, "layout",
               "dfdc holds one version of each video; set perturb.compression to one level")
        _check(self.merge.settings.mode != "raw-predict", "merge.settings.mode", "raw-predict gives crops, not videos")
