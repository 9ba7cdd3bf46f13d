"""Pure numpy/cv2 face geometry and image functions: alignment, hull masks, pose, quality scores and
colour transfer (DeepFaceLab's rct/lct/mkl/idt/sot and their masked merge variants)."""

from dflray.face.align import FACE_TYPES, get_transform_mat, transform_points, warp_to_crop, warp_to_frame
from dflray.face.color import CT_MODES, color_transfer
from dflray.face.masks import hull_mask
from dflray.face.pose import estimate_pitch_yaw_roll
from dflray.face.quality import blur_score

__all__ = [
    "CT_MODES",
    "FACE_TYPES",
    "blur_score",
    "color_transfer",
    "estimate_pitch_yaw_roll",
    "get_transform_mat",
    "hull_mask",
    "transform_points",
    "warp_to_crop",
    "warp_to_frame",
]
