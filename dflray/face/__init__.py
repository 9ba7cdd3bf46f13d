"""Pure numpy/cv2 face geometry: alignment, hull masks, pose and quality scores."""

from dflray.face.align import FACE_TYPES, get_transform_mat, transform_points, warp_to_crop, warp_to_frame
from dflray.face.masks import hull_mask
from dflray.face.pose import estimate_pitch_yaw_roll
from dflray.face.quality import blur_score

__all__ = [
    "FACE_TYPES",
    "blur_score",
    "estimate_pitch_yaw_roll",
    "get_transform_mat",
    "hull_mask",
    "transform_points",
    "warp_to_crop",
    "warp_to_frame",
]
