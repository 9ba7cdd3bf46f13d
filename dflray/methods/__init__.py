"""Forgery methods: the method axis of a dataset plan (``base``: spec, output contract, registry).

Pure functions over aligned face crops, no Ray and no I/O: the merge runs them where it would run a
trained model's predictor. ``builtin`` registers the built-in methods.
"""

from dflray.methods.base import (
    FaceMethod,
    MethodSpec,
    SourceFaces,
    build_method,
    method_names,
    method_settings,
    method_spec,
    register_method,
    register_model_method,
)

__all__ = [
    "FaceMethod",
    "MethodSpec",
    "SourceFaces",
    "build_method",
    "method_names",
    "method_settings",
    "method_spec",
    "register_method",
    "register_model_method",
]
