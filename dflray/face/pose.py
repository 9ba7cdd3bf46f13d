"""Head pose (pitch, yaw, roll) of an aligned face, as DeepFaceLab defines it.

DFL estimates pose by fitting a generic 3D face (68 model points, in millimetre-like units)
to the 2D landmarks of an aligned crop with ``cv2.solvePnP`` under a pinhole camera whose
focal length equals the crop side and whose principal point is the crop centre. The
rotation is decomposed into x-y-z Euler angles and each angle is clipped to ±π/2. Pitch is
negated so that positive pitch means looking up. The numbers are only comparable between
faces aligned the same way, which is why the faceset stores them next to ``face_type``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["estimate_pitch_yaw_roll"]

# The generic 3D face DFL fits (x right, y down, z away from the camera), one row per
# dlib/iBUG 68-point landmark.
_LANDMARKS_68_3D = np.array([
    (-73.393523, -29.801432, 47.667532), (-72.775014, -10.949766, 45.909403),
    (-70.533638, 7.929818, 44.84258), (-66.850058, 26.07428, 43.141114),
    (-59.790187, 42.56439, 38.635298), (-48.368973, 56.48108, 30.750622),
    (-34.121101, 67.246992, 18.456453), (-17.875411, 75.056892, 3.609035),
    (0.098749, 77.061286, -0.881698), (17.477031, 74.758448, 5.181201),
    (32.648966, 66.929021, 19.176563), (46.372358, 56.311389, 30.77057),
    (57.34348, 42.419126, 37.628629), (64.388482, 25.45588, 40.886309),
    (68.212038, 6.990805, 42.281449), (70.486405, -11.666193, 44.142567),
    (71.375822, -30.365191, 47.140426), (-61.119406, -49.361602, 14.254422),
    (-51.287588, -58.769795, 7.268147), (-37.8048, -61.996155, 0.442051),
    (-24.022754, -61.033399, -6.606501), (-11.635713, -56.686759, -11.967398),
    (12.056636, -57.391033, -12.051204), (25.106256, -61.902186, -7.315098),
    (38.338588, -62.777713, -1.022953), (51.191007, -59.302347, 5.349435),
    (60.053851, -50.190255, 11.615746), (0.65394, -42.19379, -13.380835),
    (0.804809, -30.993721, -21.150853), (0.992204, -19.944596, -29.284036),
    (1.226783, -8.414541, -36.94806), (-14.772472, 2.598255, -20.132003),
    (-7.180239, 4.751589, -23.536684), (0.55592, 6.5629, -25.944448),
    (8.272499, 4.661005, -23.695741), (15.214351, 2.643046, -20.858157),
    (-46.04729, -37.471411, 7.037989), (-37.674688, -42.73051, 3.021217),
    (-27.883856, -42.711517, 1.353629), (-19.648268, -36.754742, -0.111088),
    (-28.272965, -35.134493, -0.147273), (-38.082418, -34.919043, 1.476612),
    (19.265868, -37.032306, -0.665746), (27.894191, -43.342445, 0.24766),
    (37.437529, -43.110822, 1.696435), (45.170805, -38.086515, 4.894163),
    (38.196454, -35.532024, 0.282961), (28.764989, -35.484289, -1.172675),
    (-28.916267, 28.612716, -2.24031), (-17.533194, 22.172187, -15.934335),
    (-6.68459, 19.029051, -22.611355), (0.381001, 20.721118, -23.748437),
    (8.375443, 19.03546, -22.721995), (18.876618, 22.394109, -15.610679),
    (28.794412, 28.079924, -3.217393), (19.057574, 36.298248, -14.987997),
    (8.956375, 39.634575, -22.554245), (0.381549, 40.395647, -23.591626),
    (-7.428895, 39.836405, -22.406106), (-18.160634, 36.677899, -15.121907),
    (-24.37749, 28.677771, -4.785684), (-6.897633, 25.475976, -20.893742),
    (0.340663, 26.014269, -22.220479), (8.444722, 25.326198, -21.02552),
    (24.474473, 28.323008, -5.712776), (8.449166, 30.596216, -20.671489),
    (0.205322, 31.408738, -21.90367), (-7.198266, 30.844876, -20.328022),
], dtype=np.float32)

# DFL fits jaw + eyebrows + nose ridge (0-26) and the lower nose (30-35); eyes and mouth
# are left out because they move with expression, not with the head.
_PNP_INDICES = np.r_[0:27, 30:36]


def _euler_xyz(rot: np.ndarray) -> tuple[float, float, float]:
    """Euler angles (x, y, z) of a rotation matrix R = Rz @ Ry @ Rx, gimbal-lock safe."""
    sy = math.hypot(rot[0, 0], rot[1, 0])
    if sy >= 1e-6:
        return (math.atan2(rot[2, 1], rot[2, 2]), math.atan2(-rot[2, 0], sy),
                math.atan2(rot[1, 0], rot[0, 0]))
    # Near ±90° about y the x and z axes coincide; put the whole remaining angle on x.
    return math.atan2(-rot[1, 2], rot[1, 1]), math.atan2(-rot[2, 0], sy), 0.0


def estimate_pitch_yaw_roll(landmarks: np.ndarray, size: int = 256) -> tuple[float, float, float]:
    """Estimate head pose from the landmarks of an aligned face crop.

    Args:
        landmarks: (68, 2) landmark positions in crop pixels (frame landmarks mapped with
            ``transform_points(lm, get_transform_mat(lm, size, face_type))``).
        size: Side of the square crop the landmarks live in; sets DFL's pinhole camera.

    Returns:
        ``(pitch, yaw, roll)`` in radians, each within [-π/2, π/2]. Positive pitch looks up;
        a frontal, upright face gives values near zero.

    Raises:
        ValueError: If ``landmarks`` is not (68, 2) or ``size`` is not positive.

    Example:
        >>> from dflray.face.align import get_transform_mat, transform_points
        >>> crop = transform_points(lm, get_transform_mat(lm, 256, "full"))  # doctest: +SKIP
        >>> pitch, yaw, roll = estimate_pitch_yaw_roll(crop, 256)  # doctest: +SKIP
    """
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    focal = float(size)
    camera = np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]])
    ok, rvec, _ = cv2.solvePnP(
        _LANDMARKS_68_3D[_PNP_INDICES].astype(np.float64),
        landmarks[_PNP_INDICES].astype(np.float64),
        camera,
        np.zeros((4, 1)),
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:  # solvePnP only fails on degenerate input; report a frontal face
        return 0.0, 0.0, 0.0
    pitch, yaw, roll = _euler_xyz(cv2.Rodrigues(rvec)[0])
    half_pi = math.pi / 2.0
    pitch, yaw, roll = (float(np.clip(a, -half_pi, half_pi)) for a in (pitch, yaw, roll))
    # DFL reports the model's x rotation with the opposite sign (camera y points down).
    return -pitch, yaw, roll


def estimate_pitch_yaw_roll_robust(landmarks: np.ndarray, size: int = 256) -> tuple[float, float, float]:
    """``estimate_pitch_yaw_roll``, except where DFL's solvePnP takes the mirror solution.

    DFL's iterative solvePnP starts from nothing and on some real faces settles on the mirror solution
    behind the camera, reported as roll clipped to ±π/2 (the faceset keeps DFL's values as DFL computes
    them). For measuring pose (the dataset job's quality metrics) that answer is useless, so this solves
    again from a frontal head in front of the camera (``useExtrinsicGuess``), which converges to the
    physical solution.

    Returns:
        ``(pitch, yaw, roll)`` in radians, as ``estimate_pitch_yaw_roll``.
    """
    pitch, yaw, roll = estimate_pitch_yaw_roll(landmarks, size)
    if abs(roll) < math.pi / 2 - 1e-4:
        return pitch, yaw, roll
    landmarks = np.asarray(landmarks, np.float64)
    focal = float(size)
    camera = np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]])
    model = _LANDMARKS_68_3D[_PNP_INDICES].astype(np.float64)
    # Start in front of the camera at the distance where the model's width matches the landmarks'.
    span = float(np.ptp(landmarks[_PNP_INDICES, 0])) or 1.0
    z = focal * float(np.ptp(model[:, 0])) / span
    rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [z]])
    ok, rvec, tvec = cv2.solvePnP(model, landmarks[_PNP_INDICES], camera, np.zeros((4, 1)), rvec, tvec,
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or float(tvec[2, 0]) <= 0:
        return pitch, yaw, roll
    p, y, r = _euler_xyz(cv2.Rodrigues(rvec)[0])
    half_pi = math.pi / 2.0
    p, y, r = (float(np.clip(a, -half_pi, half_pi)) for a in (p, y, r))
    return -p, y, r
