"""The merge stage's pure per-frame functions: masks and blending, post-processing, temporal smoothing
(DeepFaceLab's merger semantics; colour transfer is ``dflray.face.color``). ``dflray.merge.predict.Predictor``
(torch) runs an exported swap model, and ``dflray.merge.predictors.make_predict`` gives a merge worker its
model (a shared actor pool or in-process); neither is imported here, so augmentation workers stay free of
torch."""

from dflray.merge.blend import MergeContext, MergeResult, merge_face, paste, prepare_crop
from dflray.merge.temporal import smooth_landmarks

__all__ = ["MergeContext", "MergeResult", "merge_face", "paste", "prepare_crop", "smooth_landmarks"]
