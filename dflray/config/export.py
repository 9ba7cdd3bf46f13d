"""Exporting a generated dataset for a benchmark's own loader (``dflray export-dataset``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dflray.config._base import Resources, _check
from dflray.config.generate import COMPRESSION_LEVELS

__all__ = ["DFB_RESERVED_NAMES", "EXPORT_FORMATS", "EXPORT_SPLITS", "ExportConfig", "check_dfb_name", "check_dfb_root"]

EXPORT_FORMATS = ("deepfakebench",)
EXPORT_SPLITS = ("train", "val", "test")
# Dataset names DeepfakeBench's loader treats as FaceForensics++ (abstract_dataset.py: it then expects the
# videos nested one level deeper, by compression, and picks FF++'s LMDB): an export must not take them.
_FFPP = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceShifter", "DeepFakeDetection")
DFB_RESERVED_NAMES = (*_FFPP, *(f"{n}_c40" for n in _FFPP))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _dfb_path_part(value: str, field: str) -> None:
    """DeepfakeBench derives a frame's mask and landmarks paths by ``replace('frames', …)`` and
    ``replace('.png', '.npy')`` over the whole path, and sorts by the name after the last ``/`` (or ``\\``
    when the path has one): no part of the path but the ``frames`` folder and the file suffix may hold them."""
    for bad in ("frames", ".png", "\\"):
        _check(bad not in value, field, f"must not contain {bad!r} (DeepfakeBench rewrites every 'frames' in a frame "
               f"path to 'masks' and 'landmarks', '.png' to '.npy', and splits on '\\'); got {value!r}")


def check_dfb_name(name: str, field: str = "name") -> str:
    """Checks a DeepfakeBench dataset name (the JSON's file name and top key, the label keys' prefix).

    Raises:
        ConfigError: naming ``field``, for a name DeepfakeBench would misread.
    """
    _check(bool(_NAME.match(name)), field, f"must be letters, digits and _.+- (a file name), got {name!r}")
    _check(name not in DFB_RESERVED_NAMES, field, f"{name!r} is a FaceForensics++ name in DeepfakeBench (its loader "
           "then expects compression-nested entries and FF++'s LMDB); choose another")
    _dfb_path_part(name, field)
    return name


def check_dfb_root(root: str, field: str = "root") -> str:
    """Checks the export root as DeepfakeBench's working directory sees it (the prefix of every path).

    Raises:
        ConfigError: naming ``field``.
    """
    _check(root.startswith("."), field, "must start with '.' (DeepfakeBench prefixes any other frame path with "
           f"rgb_dir and a backslash), got {root!r}")
    _dfb_path_part(root, field)
    return root.rstrip("/")


@dataclass(frozen=True)
class ExportConfig(Resources):
    """Root config of ``dflray export-dataset``.

    Attributes:
        format: the benchmark's format; ``deepfakebench`` (SCLBD/DeepfakeBench's frames, masks, landmarks
            and dataset JSON).
        frames: frames per video, evenly spaced over the frames with a face (all of them when fewer);
            DeepfakeBench's protocol takes 32.
        size: side of the aligned face crops in pixels (DeepfakeBench: 256).
        compression: the compression level to export (``c0``, ``c23``, ``c40``); None: ``c23`` when the
            dataset has it, else its first level. One level per export.
        name: the DeepfakeBench dataset name (the JSON is ``<name>.json``, the label keys ``<name>_real`` and
            ``<name>_fake``); None: the dataset's id.
        root: the export's folder as DeepfakeBench's working directory (its repository root) sees it: the
            prefix of every path in the JSON; must start with ``.``. None: ``./datasets/rgb/<name>``, where
            DeepfakeBench keeps its image datasets.
        splits: which of the dataset's splits to export (the others are written empty).
        num_cpus: CPUs per export actor (one video at a time each).
    """

    format: Literal["deepfakebench"] = "deepfakebench"
    frames: int = 32
    size: int = 256
    compression: str | None = None
    name: str | None = None
    root: str | None = None
    splits: tuple[str, ...] = EXPORT_SPLITS
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        _check(self.format in EXPORT_FORMATS, "format", f"must be one of {', '.join(EXPORT_FORMATS)}, "
               f"got {self.format!r}")
        _check(1 <= self.frames <= 10000, "frames", "must be in 1..10000")
        _check(64 <= self.size <= 2048, "size", "must be in 64..2048")
        _check(self.compression is None or self.compression in COMPRESSION_LEVELS, "compression",
               f"must be one of {', '.join(COMPRESSION_LEVELS)} (or null: c23 when present, else the first level)")
        if self.name is not None:
            check_dfb_name(self.name)
        if self.root is not None:
            check_dfb_root(self.root)
        _check(bool(self.splits) and len(set(self.splits)) == len(self.splits)
               and all(s in EXPORT_SPLITS for s in self.splits), "splits",
               f"must be distinct names among {', '.join(EXPORT_SPLITS)}, got {list(self.splits)}")
        self._check_resources()
