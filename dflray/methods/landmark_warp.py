"""``landmark-warp``: the classic graphics face swap, a source face warped onto the destination's landmarks.

This is the training-free swap that FaceForensics++'s "FaceSwap" manipulation descends from (Rössler et
al., ICCV 2019, which ran MarekKowalski/FaceSwap). That tool fits a 3D blend-shape model to the sparse
landmarks of both faces and renders the source texture in the destination's pose; the 2D form used here
is the older, simpler member of the family (as in the well-known OpenCV tutorials on Delaunay face
swaps): the 68 landmarks of both faces are triangulated and the source face is warped triangle by
triangle (piecewise affinely) so that its landmarks land on the destination's. Then it is recoloured
toward the destination inside the face, as those tools do before blending.

Per destination crop:

1. **Pick a source face.** Every 68-point shape, in aligned-crop pixels, is centred and scaled to unit
   RMS radius (the crops are already aligned by a similarity on the stable points, so what is left is
   pose and expression: yaw shows in the jaw's asymmetry, expression in the mouth, eyes and brows). The
   source face whose normalised shape is nearest (RMS point distance) is taken, except that a recent
   pick is kept while it is among the ``candidates`` nearest and no more than ``switch_margin`` farther
   than the nearest, so a video's fake does not flicker between near-equal source faces.
2. **Warp it.** A Delaunay triangulation (``scipy.spatial.Delaunay``) of the destination's 68 landmarks,
   plus forehead points above the brows and a frame of points just outside the crop, so every pixel is
   in exactly one triangle. Each triangle's affine map (destination → source) is solved in one batched
   ``numpy.linalg.solve``; a triangle-index image rasterised by ``cv2.fillConvexPoly`` turns those into
   dense sampling maps, and one ``cv2.remap`` warps the source crop together with its hull mask.
3. **Recolour** the warped face toward the destination over the face mask (``color``: any merge colour
   transfer of ``dflray.face.color``, ``rct`` by default), and keep the destination's own pixels outside
   a margin around the face.

Outputs follow the method contract (``dflray.methods.base``): the fake face crop, the fake's mask (the
warped source face region within the destination's landmark hull, ``dflray.face.masks.hull_mask``)
and the destination's hull mask. Eroding, blurring, colour transfer and blending into the frame happen
afterwards in the merge (``dflray.merge.blend.paste``), as for a trained model's prediction.

Example:
    >>> from dflray.methods import SourceFaces, build_method
    >>> fake = build_method("landmark-warp", {}, resolution=256, face_type="whole_face", seed=0,
    ...                     sources=SourceFaces(src_crops, src_landmarks))  # doctest: +SKIP
    >>> faces, fake_masks, dst_masks = fake(dst_crops, dst_landmarks)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from dflray.config import ConfigError
from dflray.face.color import MERGE_CT_CHOICES, color_transfer
from dflray.face.masks import hull_mask
from dflray.methods._picks import RECENT, StickyPicks
from dflray.methods.base import SourceFaces, register_method

__all__ = ["LandmarkWarp", "LandmarkWarpSettings", "normalized_shapes"]

# Forehead points: each brow point pushed away from the eye point below it by this many brow-to-eye
# distances. DFL's hull mask reaches half that far, so the mask lies inside the landmark-driven mesh.
_FOREHEAD = 1.0
_BROW_EYE = (np.r_[17:27], np.array([36, 36, 37, 38, 39, 42, 43, 44, 45, 45]))
_INNER_MOUTH = np.r_[60:68]


@dataclass(frozen=True)
class LandmarkWarpSettings:
    """Settings of ``landmark-warp``.

    Attributes:
        candidates: a recent pick is kept only while it is among this many nearest source faces (1: always
            the nearest, no temporal stickiness).
        switch_margin: a recent pick is kept while its shape distance is at most ``1 + switch_margin``
            times the nearest source face's; 0 always takes the nearest.
        color: colour transfer of the warped face toward the destination inside the face mask: ``none``
            or a merge colour-transfer mode of ``dflray.face.color`` (``rct``, ``lct``, ``mkl-m``, ...).
        mouth: keep the destination's inner mouth (lips' inner contour, points 60-67): the fake mask is 0
            there, so the destination's teeth and tongue show through.
    """

    candidates: int = 4
    switch_margin: float = 0.1
    color: str = "rct"
    mouth: bool = False

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ConfigError("candidates", f"must be >= 1, got {self.candidates}")
        if not (np.isfinite(self.switch_margin) and 0.0 <= self.switch_margin <= 10.0):
            raise ConfigError("switch_margin", f"must be in [0, 10], got {self.switch_margin}")
        if self.color not in MERGE_CT_CHOICES:
            raise ConfigError("color", f"must be one of {', '.join(MERGE_CT_CHOICES)}, got {self.color!r}")


def normalized_shapes(landmarks: np.ndarray) -> np.ndarray:
    """68-point shapes centred on their mean and scaled to unit RMS radius, flattened: ``N×136`` float64.

    The RMS distance between two rows (the Euclidean distance over ``sqrt(68)``) is the pose and
    expression distance the source face is picked by; it is in units of the face's RMS radius.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    lm = lm - lm.mean(axis=1, keepdims=True)
    radius = np.sqrt((lm ** 2).sum(axis=2).mean(axis=1))
    return (lm / np.maximum(radius, 1e-9)[:, None, None]).reshape(len(lm), 136)


def _anchors(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """The warp's control points of one face: its 68 landmarks, 10 forehead points and 8 frame points.

    The frame points sit one pixel outside the crop and map to themselves, so the triangulation covers
    every pixel and the background far from the face stays where it is.
    """
    brow, eye = _BROW_EYE
    forehead = landmarks[brow] + _FOREHEAD * (landmarks[brow] - landmarks[eye])
    lo, mid, hi = -1.0, (resolution - 1) / 2.0, float(resolution)
    frame = np.array([(lo, lo), (mid, lo), (hi, lo), (hi, mid), (hi, hi), (mid, hi), (lo, hi), (lo, mid)])
    return np.concatenate([landmarks, forehead, frame])


def _warp_maps(dst_pts: np.ndarray, src_pts: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (x and y, R×R float32) of the piecewise-affine warp taking ``src_pts`` onto ``dst_pts``.

    Triangles are the Delaunay triangles of ``dst_pts``: in the output they never overlap, so each pixel
    takes the affine map of the one triangle it lies in (a source triangle may fold where the poses differ
    a lot; the nearest-pose pick keeps that rare).
    """
    tris = Delaunay(dst_pts).simplices  # T×3; duplicate points (a closed mouth's inner lips) are skipped
    n = len(tris)
    d = np.concatenate([dst_pts[tris], np.ones((n, 3, 1))], axis=2)  # T×3×3: [x, y, 1] per vertex
    s = src_pts[tris]  # T×3×2
    affine = np.empty((n + 1, 3, 2))
    ok = np.abs(np.linalg.det(d)) > 1e-9
    affine[:n][ok] = np.linalg.solve(d[ok], s[ok])  # [x, y, 1] @ A = source point
    affine[:n][~ok] = affine[n] = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # identity fallback
    # Triangle index per pixel; pixels no triangle reaches (none, with the frame points) use the identity.
    index = np.full((resolution, resolution), n, np.uint16)
    # 4 fractional bits (shift=4): sub-pixel edges; wild points are clamped so the int32 rasteriser cannot overflow.
    fixed = np.round(np.clip(dst_pts[tris], -16 * resolution, 17 * resolution) * 16).astype(np.int32)
    for i in range(n):
        cv2.fillConvexPoly(index, fixed[i], i, lineType=cv2.LINE_8, shift=4)
    a = affine.reshape(n + 1, 6).astype(np.float32)[index]  # R×R×6: a00 a01 a10 a11 a20 a21
    grid = np.arange(resolution, dtype=np.float32)
    x, y = grid[None, :], grid[:, None]
    map_x = x * a[..., 0] + y * a[..., 2] + a[..., 4]
    map_y = x * a[..., 1] + y * a[..., 3] + a[..., 5]
    return map_x, map_y


@register_method("landmark-warp", version=1, model="none", settings=LandmarkWarpSettings, reads=("source",),
                 summary="graphics face swap (FaceForensics++ FaceSwap's 2D cousin): the source face nearest in "
                         "pose, warped piecewise-affinely onto the dst's 68 landmarks and recoloured")
class LandmarkWarp:
    """``landmark-warp`` built for one video (see the module docstring).

    It keeps the recent source picks between calls, so calls must come in frame order (the merge does).

    Args:
        settings: ``LandmarkWarpSettings``.
        resolution: side of the dst crops it will get; source crops of another size are resized to it.
        face_type: face type of the dst crops; the source crops must be of the same face type.
        seed: the video's seed (for the random colour transfers ``idt``, ``sot``, ``mix``).
        sources: the source person's aligned faces and their landmarks.

    Raises:
        ValueError: no sources, or source crops that are not uint8.
    """

    def __init__(self, settings: LandmarkWarpSettings, *, resolution: int, face_type: str, seed: int,
                 sources: SourceFaces | None):
        if sources is None:
            raise ValueError("landmark-warp needs the source faceset (sources=)")
        if sources.crops.dtype != np.uint8:
            raise ValueError(f"source crops must be uint8, got {sources.crops.dtype}")
        self.settings, self.resolution, self.face_type = settings, int(resolution), face_type
        crops, landmarks = sources.crops, np.asarray(sources.landmarks, np.float64)
        side = crops.shape[1]
        if side != self.resolution:
            # An aligned crop at another size is the same crop scaled (the alignment is linear in the size).
            crops = np.stack([cv2.resize(c, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA
                                         if side > self.resolution else cv2.INTER_CUBIC) for c in crops])
            landmarks = (landmarks + 0.5) * (self.resolution / side) - 0.5
        self._crops, self._landmarks = crops, landmarks
        self._shapes = normalized_shapes(landmarks)
        self._sq_norms = (self._shapes ** 2).sum(axis=1)
        self._hulls: dict[int, np.ndarray] = {}
        self._picks = StickyPicks(settings.candidates, settings.switch_margin)
        self._rng = np.random.default_rng(seed)

    def distances(self, landmarks: np.ndarray) -> np.ndarray:
        """``N×M`` pose-and-expression distances of ``N`` dst shapes to the ``M`` source faces (RMS, in radii)."""
        q = normalized_shapes(landmarks)
        sq = (q ** 2).sum(axis=1)[:, None] + self._sq_norms[None, :] - 2.0 * q @ self._shapes.T
        return np.sqrt(np.maximum(sq, 0.0) / 68.0)

    def select(self, landmarks: np.ndarray) -> np.ndarray:
        """The source face index for each of ``N`` dst shapes (``N×68×2``), in order; updates the recent picks."""
        return self._picks.select(self.distances(landmarks))

    def _source_hull(self, j: int) -> np.ndarray:
        if j not in self._hulls:
            if len(self._hulls) >= 4 * RECENT:  # a few recent picks, not one mask per source face
                self._hulls.clear()
            self._hulls[j] = hull_mask((self.resolution, self.resolution), self._landmarks[j])
        return self._hulls[j]

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fake faces for ``N`` dst crops.

        Args:
            crops: ``N×R×R×3`` float32 RGB in [0, 1].
            landmarks: ``N×68×2`` dst landmarks, crop pixels.

        Returns:
            (fake faces ``N×R×R×3``, fake masks ``N×R×R``, dst masks ``N×R×R``), float32 in [0, 1]. Outside
            a margin around the face the fake face is the dst crop itself.

        Raises:
            ValueError: on crops or landmarks of the wrong shape.
        """
        r = self.resolution
        crops = np.asarray(crops, np.float32)
        landmarks = np.asarray(landmarks, np.float64)
        if crops.ndim != 4 or crops.shape[1:] != (r, r, 3):
            raise ValueError(f"crops must be N x {r} x {r} x 3, got {crops.shape}")
        if landmarks.shape != (len(crops), 68, 2) or not np.isfinite(landmarks).all():
            raise ValueError(f"landmarks must be finite, {len(crops)} x 68 x 2, got {landmarks.shape}")
        faces = np.empty_like(crops)
        fake_masks = np.empty((len(crops), r, r), np.float32)
        dst_masks = np.empty((len(crops), r, r), np.float32)
        picks = self.select(landmarks) if len(crops) else []
        # The warped face is kept a little beyond the mask, so the merge's mask blur blends face into face.
        margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(2, r // 32) + 1,) * 2)
        for i, j in enumerate(picks):
            dst_lm, src_lm = landmarks[i], self._landmarks[j]
            map_x, map_y = _warp_maps(_anchors(dst_lm, r), _anchors(src_lm, r), r)
            # One remap moves the source face and its hull mask together (4 uint8 channels).
            src4 = np.dstack([self._crops[j], self._source_hull(j) * np.uint8(255)])
            warped = cv2.remap(src4, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            dst_hull = hull_mask((r, r), dst_lm)
            fake_mask = dst_hull * (warped[..., 3].astype(np.float32) / np.float32(255))
            if self.settings.mouth:
                cv2.fillPoly(fake_mask, [np.round(dst_lm[_INNER_MOUTH]).astype(np.int32)], 0.0)
            face = warped[..., :3].astype(np.float32) / np.float32(255)
            keep = cv2.dilate((fake_mask > 0).astype(np.uint8), margin)
            inside = fake_mask > 0.5
            if self.settings.color != "none" and inside.any():
                # Only the box around the kept face is recoloured (the rest is the dst's own pixels): a
                # third of the work at whole_face. dflray.face.color works in BGR, as DFL's transfers do.
                x, y, w, h = cv2.boundingRect(keep)
                box = np.s_[y:y + h, x:x + w]
                face[box] = color_transfer(self.settings.color, np.ascontiguousarray(face[box][..., ::-1]),
                                           np.ascontiguousarray(crops[i][box][..., ::-1]), mask=inside[box],
                                           rng=self._rng)[..., ::-1]
            faces[i] = np.where(keep.astype(bool)[..., None], np.clip(face, 0, 1), crops[i])
            fake_masks[i] = np.clip(fake_mask, 0, 1)
            dst_masks[i] = dst_hull
        return faces, fake_masks, dst_masks
