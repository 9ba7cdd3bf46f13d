"""The merge stage's pure per-frame functions: colour transfer, masks and blending, post-processing,
temporal smoothing (DeepFaceLab's merger semantics). ``dflray.merge.predict.Predictor`` (torch) runs
an exported swap model; it is not imported here, so augmentation workers stay free of torch."""

from dflray.merge.blend import MergeContext, MergeResult, merge_face, paste, prepare_crop
from dflray.merge.color import CT_MODES, color_transfer
from dflray.merge.temporal import smooth_landmarks

__all__ = ["CT_MODES", "MergeContext", "MergeResult", "color_transfer", "merge_face", "paste", "prepare_crop",
           "smooth_landmarks"]
