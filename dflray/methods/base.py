"""The forgery-method axis: what a method is, what it needs, and the explicit registry of methods.

A *method* makes the fake face of one destination face crop. It works in the aligned crop space every
stage shares (``dflray.face.align``: a face type and a square resolution), so every method goes
through the same merge-side steps afterwards (``dflray.merge.blend.paste``: mask erode/blur, colour
transfer, blend modes, sharpening, degradations; tracks and smoothing; the mask video) and the same
quality metrics, gates and perturbations.

Its output contract is the exported swap model's (``dflray.merge.predict.Predictor``): for ``N`` crops
``N×R×R×3`` float32 RGB in [0, 1] it returns the fake faces ``N×R×R×3``, the fake's mask and the dst
mask ``N×R×R`` (float32, [0, 1]); the merge's ``mask_mode`` combines the two masks as it does for a
model (``learned-prd`` is the method's own mask). Unlike a model, a method also gets each crop's 68
landmarks in crop pixels.

A method is built once per video (``build``), so whatever it draws at random (``sbi``'s colour and
scale jitter, say) it draws once per video from the video's seed, and the fake is temporally
consistent. What a method needs is declared in its ``MethodSpec``:

- ``model``: ``pair`` (a model trained per source-destination pair), ``source`` (per source identity)
  or ``none`` (no training; the plan may forbid training and still use it);
- ``reads``: which facesets the method reads at merge time besides the destination video's faces
  (``source`` for a method that takes faces from the source person's faceset);
- ``face_type`` and ``resolution``: the crop it works on (``None``: the plan's);
- ``settings``: a frozen, typed config dataclass (``dflray.config.methods``) whose ``__post_init__``
  checks ranges, raising ``ConfigError`` naming the field.

Registering is explicit (``@register_method``), a duplicate name is an error, and nothing is imported
by building strings.

Example:
    >>> from dflray.methods import build_method, method_spec
    >>> method_spec("sbi").model
    'none'
    >>> fake = build_method("sbi", {}, resolution=128, face_type="whole_face", seed=7)  # doctest: +SKIP
    >>> faces, fake_masks, dst_masks = fake(crops, landmarks)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import numpy as np

from dflray.config.load import from_dict

__all__ = ["FaceMethod", "MethodSpec", "SourceFaces", "build_method", "method_names", "method_settings",
           "method_spec", "register_method", "register_model_method"]

ModelNeed = Literal["pair", "source", "none"]


@dataclass(frozen=True)
class SourceFaces:
    """Faces of the source person a method may take from (``reads=("source",)``): aligned crops and their
    landmarks, in the crop space the method works in.

    Attributes:
        crops: ``M×R×R×3`` uint8 RGB.
        landmarks: ``M×68×2`` float32, crop pixels.
        embeddings: ``M×128`` dlib identity descriptors, or None.
    """

    crops: np.ndarray
    landmarks: np.ndarray
    embeddings: np.ndarray | None = None

    def __post_init__(self):
        if self.crops.ndim != 4 or self.crops.shape[3] != 3 or self.crops.shape[1] != self.crops.shape[2]:
            raise ValueError(f"source crops must be M x R x R x 3, got {self.crops.shape}")
        if self.landmarks.shape != (len(self.crops), 68, 2):
            raise ValueError(f"source landmarks must be {len(self.crops)} x 68 x 2, got {self.landmarks.shape}")
        if not len(self.crops):
            raise ValueError("a source faceset with no faces")


class FaceMethod(Protocol):
    """A method built for one video: fake faces for batches of that video's dst crops."""

    spec: MethodSpec

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``crops``: ``N×R×R×3`` float32 RGB [0, 1]; ``landmarks``: ``N×68×2`` crop pixels. Returns the fake
        faces ``N×R×R×3``, the fake's masks and the dst masks ``N×R×R`` (float32, [0, 1])."""
        ...


@dataclass(frozen=True)
class MethodSpec:
    """What a registered method is and needs (see the module docstring).

    Attributes:
        name: the plan's name for it (``landmark-warp``).
        version: bumped when its output changes for the same inputs; recorded with every fake.
        model: ``pair``, ``source`` or ``none``.
        reads: facesets read at merge time besides the dst video's own faces: ``()`` or ``("source",)``.
        settings: the typed settings dataclass (defaults are the method's defaults).
        face_type: the face type it works at, or None for the plan's.
        resolution: the crop side it works at, or None for the plan's.
        summary: one line for ``--help`` and the README: what it is and where it comes from.
        model_config: a model method's fixed model (``dflray.config.ModelConfig`` fields it sets, e.g.
            DeepFaceLab's Quick96); None: the plan's ``models.train.model`` with ``arch`` = the name.
        assets: for a method that loads files its settings name (``onnx-swap``'s models): called as
            ``assets(settings, read, field_path)`` with ``read`` the caller's uri → bytes, it loads and checks
            them (``ConfigError`` naming the setting) and returns what ``build`` gets as ``assets=``. The
            method never does I/O itself; the dataset job calls it once before work, and the merge once per
            worker and settings.
    """

    name: str
    version: int
    model: ModelNeed
    settings: type
    summary: str
    reads: tuple[str, ...] = ()
    face_type: str | None = None
    resolution: int | None = None
    factory: Callable[..., FaceMethod] | None = field(default=None, compare=False, repr=False)
    model_config: dict[str, Any] | None = field(default=None, compare=False)
    assets: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.model not in ("pair", "source", "none"):
            raise ValueError(f"method {self.name}: model must be pair, source or none, not {self.model!r}")
        if not set(self.reads) <= {"source"}:
            raise ValueError(f"method {self.name}: reads must be () or ('source',), not {self.reads!r}")


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, version: int, model: ModelNeed, settings: type, summary: str,
                    reads: tuple[str, ...] = (), face_type: str | None = None, resolution: int | None = None,
                    assets: Callable[..., Any] | None = None):
    """Decorator adding a method under ``name``; a duplicate name raises ValueError.

    The decorated callable (usually a class) is called as ``factory(settings, *, resolution, face_type,
    seed, sources)`` (and ``assets=`` when the method declares an ``assets`` loader) and returns a
    ``FaceMethod``; model-backed methods (``model`` not ``none``) register with no factory of their own use
    (their fakes come from the trained model's predictor).
    """

    def deco(factory):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = MethodSpec(name=name, version=version, model=model, settings=settings, summary=summary,
                                    reads=tuple(reads), face_type=face_type, resolution=resolution,
                                    factory=factory, assets=assets)
        if isinstance(factory, type):
            factory.spec = _METHODS[name]
        return factory

    return deco


def register_model_method(name: str, *, version: int, model: ModelNeed, settings: type, summary: str,
                          model_config: dict[str, Any] | None = None) -> MethodSpec:
    """Declares a method whose fakes come from a trained model (``model`` ``pair`` or ``source``): the
    dataset job trains it (``model_config``'s fixed model, or the plan's with ``arch`` = ``name``) and
    the merge runs its exported predictor; there is nothing to build here."""
    if model == "none":
        raise ValueError(f"method {name!r}: a model method needs model pair or source")
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered")
    cfg = dict(model_config) if model_config else None
    _METHODS[name] = MethodSpec(name=name, version=version, model=model, settings=settings, summary=summary,
                                face_type=(cfg or {}).get("face_type"), resolution=(cfg or {}).get("resolution"),
                                model_config=cfg)
    return _METHODS[name]


def method_names() -> list[str]:
    """Every registered method's name, sorted."""
    _load_builtin()
    return sorted(_METHODS)


def method_spec(name: str, field_path: str = "method") -> MethodSpec:
    """The spec of method ``name``.

    Raises:
        ConfigError: naming ``field_path`` for an unknown name, with the known ones.
    """
    from dflray.config import ConfigError

    _load_builtin()
    if name not in _METHODS:
        raise ConfigError(field_path, f"unknown method {name!r} (known: {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def method_settings(name: str, data: dict[str, Any] | None = None, field_path: str = "method") -> Any:
    """Method ``name``'s typed settings from a plain dict (``{}`` for its defaults), checked.

    Raises:
        ConfigError: naming ``FIELD_PATH.settings.KEY`` for an unknown key or a value out of range.
    """
    spec = method_spec(name, field_path)
    return from_dict(spec.settings, dict(data or {}), f"{field_path}.settings" if field_path else "settings")


def build_method(name: str, settings: dict[str, Any] | Any | None = None, *, resolution: int, face_type: str,
                 seed: int, sources: SourceFaces | None = None, assets: Any = None) -> FaceMethod:
    """Method ``name`` built for one video.

    Args:
        name: a registered method that needs no model (``model == "none"``).
        settings: its settings: the typed dataclass, a dict of overrides, or None for the defaults.
        resolution: the crop side of the crops it will get.
        face_type: their face type.
        seed: the video's seed; everything the method draws at random it draws from this.
        sources: the source person's faces, for methods that read the source faceset.
        assets: what the spec's ``assets`` loader returned, for a method that has one.

    Raises:
        ConfigError: unknown method or settings.
        ValueError: a model-backed method, missing ``sources`` for a method that reads them, or missing
            ``assets`` for a method that loads some.
    """
    spec = method_spec(name)
    if spec.model != "none" or spec.factory is None:
        raise ValueError(f"method {name!r} makes its fakes with a trained model ({spec.model}); it is not built here")
    if not isinstance(settings, spec.settings):
        settings = method_settings(name, settings)
    if "source" in spec.reads and sources is None:
        raise ValueError(f"method {name!r} reads the source faceset: pass sources=")
    if spec.assets is not None:
        if assets is None:
            raise ValueError(f"method {name!r} loads files its settings name: pass assets= (its spec's loader)")
        return spec.factory(settings, resolution=resolution, face_type=face_type, seed=seed, sources=sources,
                            assets=assets)
    return spec.factory(settings, resolution=resolution, face_type=face_type, seed=seed, sources=sources)


def _load_builtin() -> None:
    """Imports the modules that register the built-in methods (explicit, not by building names)."""
    import dflray.methods.builtin  # noqa: F401  (registers on import)
