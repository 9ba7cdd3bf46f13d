"""Typed, declarative job configuration.

Every job has one root frozen dataclass. Values are validated on construction, so a bad option fails
before any work starts, with an error naming the field (``ConfigError: detect.batch_size: must be >= 1``).
Configs load from YAML and take ``key.path=value`` overrides from the command line.

Modules (every public name is re-exported here: import from ``dflray.config``):

- ``_base``: ``ConfigError``, the ``_check`` helper and ``Resources``, the one check of the
  ``concurrency`` / ``num_cpus`` / ``num_gpus`` fields of the configs that size a Ray pool.
- ``extract``: ``ExtractConfig`` (``dflray extract``) and its decode, detect, landmark and align parts.
- ``train``: ``TrainConfig`` (``dflray train``) and its model, loss, augment and optimizer parts.
- ``merge``: ``MergeSettings`` (DFL's merger options) and ``MergeConfig`` (``dflray merge``).
- ``quality``: ``QUALITY_METRICS`` and the quality gates of ``dflray generate``.
- ``generate``: ``GenerateConfig`` (``dflray generate PLAN.yaml``).
- ``xseg``: ``XSegTrainConfig`` and ``XSegApplyConfig`` (``dflray xseg train|apply``).
- ``load``: dict / YAML / overrides -> config (``load_config``, ``from_dict``, ``to_dict``).

``FACE_TYPES`` and ``FACE_TYPE_ORDER`` are geometry facts defined in ``dflray.face.align``, re-exported here;
so are the colour-transfer modes the configs accept, ``TRAIN_CT_CHOICES`` and ``MERGE_CT_CHOICES``, derived
from ``dflray.face.color``'s registry. The merger's mode vocabulary (``MERGE_MODES``, ``MASK_MODES``,
``XSEG_MASK_MODES``) is defined in ``merge``; ``dflray.merge`` registers exactly those names, checked on import.

Example:
    >>> cfg = load_config(ExtractConfig, overrides=["align.face_type=full", "decode.every_n=2"])
    >>> cfg.align.face_type, cfg.decode.every_n
    ('full', 2)
"""

from dflray.config._base import ConfigError, Resources
from dflray.config.evaluate import EvaluateConfig
from dflray.config.export import ExportConfig
from dflray.config.extract import (
    AlignConfig,
    DecodeConfig,
    DetectConfig,
    ExtractConfig,
    LandmarkConfig,
)
from dflray.config.generate import (
    COMPRESSION_LEVELS,
    PERTURB_KINDS,
    GenerateConfig,
    IdentityClusterConfig,
    MethodEntry,
    ModelsConfig,
    PairingConfig,
    PerturbConfig,
    SplitsConfig,
    VideoEntry,
)
from dflray.config.load import apply_overrides, from_dict, load_config, to_dict
from dflray.config.merge import (
    MASK_MODES,
    MERGE_CT_CHOICES,
    MERGE_MODES,
    MERGE_SETTING_FIELDS,
    XSEG_MASK_MODES,
    IdentityConfig,
    MergeConfig,
    MergeQualityConfig,
    MergeSettings,
    MergeWorkersConfig,
    OutputConfig,
    PredictConfig,
    Vary,
)
from dflray.config.quality import QUALITY_METRICS, QualityConfig, QualityGate
from dflray.config.train import (
    ARCHS,
    TRAIN_CT_CHOICES,
    AugmentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from dflray.config.xseg import XSegApplyConfig, XSegTrainConfig
from dflray.face.align import FACE_TYPE_ORDER, FACE_TYPES

__all__ = [
    "ARCHS",
    "COMPRESSION_LEVELS",
    "FACE_TYPES",
    "FACE_TYPE_ORDER",
    "MASK_MODES",
    "MERGE_CT_CHOICES",
    "MERGE_MODES",
    "MERGE_SETTING_FIELDS",
    "PERTURB_KINDS",
    "QUALITY_METRICS",
    "TRAIN_CT_CHOICES",
    "XSEG_MASK_MODES",
    "AlignConfig",
    "AugmentConfig",
    "ConfigError",
    "DecodeConfig",
    "DetectConfig",
    "EvaluateConfig",
    "ExportConfig",
    "ExtractConfig",
    "GenerateConfig",
    "MethodEntry",
    "IdentityClusterConfig",
    "IdentityConfig",
    "LandmarkConfig",
    "LossConfig",
    "MergeConfig",
    "MergeQualityConfig",
    "MergeSettings",
    "MergeWorkersConfig",
    "ModelConfig",
    "ModelsConfig",
    "OptimConfig",
    "OutputConfig",
    "PairingConfig",
    "PerturbConfig",
    "PredictConfig",
    "QualityConfig",
    "QualityGate",
    "Resources",
    "SplitsConfig",
    "TrainConfig",
    "Vary",
    "VideoEntry",
    "XSegApplyConfig",
    "XSegTrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "to_dict",
]
