"""What every config module shares: ``ConfigError``, the ``_check`` helper and the ``Resources`` mixin."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import ClassVar


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted field path."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _check(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(path, message)


@functools.cache
def _nullable(cls: type, name: str) -> bool:
    """Whether field ``name`` of the dataclass ``cls`` is typed ``X | None``."""
    return type(None) in typing.get_args(typing.get_type_hints(cls)[name])


class Resources:
    """Mixin of the configs that size a Ray task or actor pool: their resource fields, checked in one place.

    A config declares whichever of ``concurrency``, ``num_gpus`` and ``num_cpus`` it takes as its own
    dataclass fields, so the YAML keys stay flat (``detect.concurrency=2``) and each config keeps its own
    defaults and its own set of options; its ``__post_init__`` calls ``_check_resources()``, which checks:

    - ``concurrency``: ``>= _min_concurrency`` (1 unless the class lowers it), or null where the field
      is typed ``int | None``;
    - ``num_gpus``: ``>= 0`` (fractions allowed);
    - ``num_cpus``: ``> 0``.

    Errors name the field as the config's own checks do (``detect.concurrency: must be >= 1``).
    """

    _min_concurrency: ClassVar[int] = 1

    def _check_resources(self) -> None:
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if "concurrency" in names:
            low, nullable = self._min_concurrency, _nullable(type(self), "concurrency")
            value = self.concurrency  # type: ignore[attr-defined]
            _check((nullable and value is None) or value >= low, "concurrency",
                   f"must be >= {low}{' or null' if nullable else ''}")
        if "num_gpus" in names:
            _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")  # type: ignore[attr-defined]
        if "num_cpus" in names:
            _check(self.num_cpus > 0, "num_cpus", "must be > 0")  # type: ignore[attr-defined]
