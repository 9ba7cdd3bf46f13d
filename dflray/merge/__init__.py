"""The merge stage's pure per-frame functions: colour transfer, masks and blending, post-processing,
temporal smoothing (DeepFaceLab's merger semantics)."""

from dflray.merge.blend import MergeContext, MergeResult, merge_face, paste, prepare_crop
from dflray.merge.color import CT_MODES, color_transfer
from dflray.merge.predict import Predictor
from dflray.merge.temporal import smooth_landmarks

__all__ = ["CT_MODES", "MergeContext", "MergeResult", "Predictor", "color_transfer", "merge_face", "paste", "prepare_crop",
           "smooth_landmarks"]
