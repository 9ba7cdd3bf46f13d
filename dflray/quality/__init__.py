"""Fake quality: how well a face swap worked, measured on the fake, the real video and the mask.

A shared layer: it knows no stage and needs no Ray. The merge stage measures each merged video with it
(``MergeConfig.quality``), the dataset job measures and gates its fakes with it, and ``bench/gpu.py``
judges swaps with it as a plain script.

Modules:
    identity: ``swap_success`` (the headline) and dlib descriptor distances, over descriptors.
    metrics: the other metrics as pure numpy/cv2 functions over landmarks, frames and masks (pose and
        expression error, flicker, seam, detail, and ``blur_like`` for the blur guard).
    gates: ``apply_gates`` for ``QualityConfig.gates``, and the ``swap_success`` summaries.
    measure: ``FaceMeasurer``, which loads the detector, landmarker and identity embedder once and
        measures a fake video (decoded with ``dflray.io.video``) with those metrics.

Example:
    >>> from dflray.config import QualityGate
    >>> apply_gates({"swap_success": 0.75}, [QualityGate("swap_success", min=0.8)])
    (False, ['swap_success 0.75 < min 0.8'])
    >>> m = FaceMeasurer()  # doctest: +SKIP
    >>> m.measure_fake("fake.mp4", "real.mp4", "mask.mp4", dst_faces, source_embedding)  # doctest: +SKIP
"""

from dflray.quality.gates import apply_gates, format_success, success_stats
from dflray.quality.identity import SAME_PERSON_THRESHOLD, frame_swapped, identity_distance, swap_success
from dflray.quality.measure import FaceMeasurer, image_embedding
from dflray.quality.metrics import detail_ratio

__all__ = [
    "SAME_PERSON_THRESHOLD",
    "FaceMeasurer",
    "apply_gates",
    "detail_ratio",
    "format_success",
    "frame_swapped",
    "identity_distance",
    "image_embedding",
    "success_stats",
    "swap_success",
]
