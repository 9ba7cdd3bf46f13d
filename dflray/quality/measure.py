"""Measuring fake videos: the face models and video decoding behind ``dflray.quality.metrics``.

``FaceMeasurer`` loads a landmarker, an identity embedder (dlib's 128-D descriptor) and, on first use, a
detector, once per worker. Identity, pose and expression are measured on up to ``sample_frames`` frames
per fake, evenly spaced among the frames with a swap; landmarks are re-detected with the same landmarker
in both the fake and the real frame (inside the destination face's box), so a landmarker's own bias
cancels out; for ``swap_success`` the fake's face is also re-detected with the detector (not taken from
the destination's box), so a frame where the swap destroyed the face counts as a failure; when the fake
face is softer than the real one (``detail``), the real face blurred to the fake's detail is described
too, and the fake must read as the source against it as well (blur alone moves dlib's descriptor).
Flicker and seam use every frame. ``FaceMeasurer.measure_fake`` streams the three videos (fake, real, mask) in step,
so memory does not grow with video length.

The models and ``dflray.io.video`` are imported when first needed, so importing this module (and
``dflray.quality``) loads no model.

Example:
    >>> m = FaceMeasurer()  # doctest: +SKIP
    >>> metrics = m.measure_fake("fake.mp4", "real.mp4", "mask.mp4", dst_faces, src_embedding)  # doctest: +SKIP
    >>> ok, reasons = apply_gates(metrics, QualityConfig(gates=(QualityGate("seam", max=1.5),)).gates)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dflray.config import DetectConfig, LandmarkConfig

# The metrics' private helpers are shared within this package: the streaming accumulators and the
# mask, pose and descriptor checks are the same ones the public metric functions use.
from dflray.quality.identity import _source_mean, identity_distance, swap_success
from dflray.quality.metrics import (
    DETAIL_MATCH,
    _angle_diff,
    _bbox,
    _binary,
    _FlickerAcc,
    _in_step,
    _pose,
    _SeamAcc,
    blur_like,
    detail_ratio,
    similarity_nme,
)

__all__ = ["FaceMeasurer", "image_embedding"]

# A face re-detected in the fake counts as the swapped one when its box overlaps the destination face's
# box at least this much (a swap keeps the face where it was; another face in the frame does not).
_REDETECT_IOU = 0.3


def _column(faces: Any, name: str, width: int | None) -> np.ndarray | None:
    """A column of a pyarrow Table or a dict of arrays as a numpy array ((N,) or (N, width)); None if absent."""
    if isinstance(faces, Mapping):
        if name not in faces:
            return None
        col = faces[name]
        if width is None:
            return np.asarray(col)
        return np.asarray([np.full(width, np.nan) if v is None else np.asarray(v, np.float64).reshape(-1)
                           for v in col], np.float64).reshape(-1, width)
    if name not in faces.column_names:
        return None
    col = faces.column(name)
    if width is None:
        return col.to_numpy()
    return np.asarray([np.full(width, np.nan) if v is None else v for v in col.to_pylist()],
                      np.float64).reshape(-1, width)


def _iou(a: np.ndarray, b: tuple[int, int, int, int]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pick_samples(mask_boxes: dict[int, tuple[int, int, int, int]], frame_index: np.ndarray, bbox: np.ndarray,
                  n: int) -> dict[int, np.ndarray]:
    """frame → dst bbox of up to ``n`` frames evenly spaced among those with a mask and an overlapping dst face."""
    by_frame: dict[int, list[int]] = {}
    for row, f in enumerate(frame_index.tolist()):
        by_frame.setdefault(int(f), []).append(row)
    candidates: list[tuple[int, np.ndarray]] = []
    for f in sorted(mask_boxes):
        rows = by_frame.get(f)
        if not rows:
            continue
        ious = [_iou(bbox[r], mask_boxes[f]) for r in rows]
        best = int(np.argmax(ious))
        if ious[best] > 0 and np.isfinite(bbox[rows[best]]).all():
            candidates.append((f, bbox[rows[best]]))
    if not candidates:
        return {}
    picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, min(n, len(candidates)))).astype(int))
    return {candidates[i][0]: candidates[i][1] for i in picks}


class FaceMeasurer:
    """Measures fakes: the landmarker and identity model are loaded once (one per worker).

    Args:
        landmarks: landmarker config (``dlib68`` by default, the faceset's).
        detect: detector config, used by ``image_embedding`` and ``detect_at`` (``swap_success``
            re-detects the face in the fake); built on first use.
        face_type: crop type poses are estimated in (the faceset's ``align.face_type``).
        pose_size: crop side poses are estimated in (the faceset's ``align.size``).

    Example:
        >>> m = FaceMeasurer()  # doctest: +SKIP
        >>> m.measure_fake(fake_uri, real_uri, mask_uri, dst_faces, source_embedding)  # doctest: +SKIP
        {'id_distance_source': 0.41, 'id_distance_target': 0.83, 'pose_error': 1.9, ..., 'swap_success': 0.875}
    """

    def __init__(self, landmarks: LandmarkConfig | None = None, detect: DetectConfig | None = None,
                 face_type: str = "whole_face", pose_size: int = 512):
        from dflray.detect import build_landmarker
        from dflray.detect.dlib_models import IdentityEmbedder

        self.landmarker = build_landmarker(landmarks or LandmarkConfig())
        self.embedder = IdentityEmbedder()
        self._detect_cfg = detect or DetectConfig()
        self._detector = None
        self.face_type = face_type
        self.pose_size = pose_size

    # -------------------------------------------------------------- photos

    def image_embedding(self, rgb: np.ndarray) -> np.ndarray | None:
        """The (128,) descriptor of the largest face in an RGB photo, or None when no face is found."""
        rgb = np.ascontiguousarray(rgb)
        dets = self._detect(rgb)
        if len(dets.boxes) == 0:
            return None
        b = dets.boxes
        i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
        p5 = dets.points5[i:i + 1] if dets.points5 is not None else None
        lm = self.landmarker.landmarks(rgb, b[i:i + 1], p5)
        return self.embedder.embed(rgb, lm)[0]

    def face_at(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (68, 2) and descriptor (128,) of the face inside ``box`` (x1, y1, x2, y2) of a frame."""
        lm = self.landmarker.landmarks(rgb, np.asarray(box, np.float32).reshape(1, 4))
        return lm[0], self.embedder.embed(rgb, lm)[0]

    def detect_at(self, rgb: np.ndarray, box: np.ndarray,
                  min_iou: float = _REDETECT_IOU) -> tuple[np.ndarray, np.ndarray] | None:
        """Re-detects the face at ``box`` in a frame: landmarks (68, 2) and descriptor (128,), or None.

        Unlike ``face_at``, which trusts that a face is inside the box, this runs the detector on the
        whole frame and keeps the detection overlapping ``box`` most, so a frame whose face the swap
        destroyed (or moved away) has none.

        Args:
            rgb: H×W×3 RGB uint8 frame.
            box: (x1, y1, x2, y2) where the face should be (the destination face's box).
            min_iou: least intersection over union of a detection with ``box``.

        Returns:
            ``(landmarks, descriptor)`` of that detection, or None when no detection overlaps enough.
        """
        rgb = np.ascontiguousarray(rgb)
        dets = self._detect(rgb)
        if len(dets.boxes) == 0:
            return None
        target = tuple(float(x) for x in np.asarray(box, np.float64).reshape(4))
        ious = [_iou(b, target) for b in np.asarray(dets.boxes, np.float64)]
        i = int(np.argmax(ious))
        if ious[i] < min_iou:
            return None
        p5 = dets.points5[i:i + 1] if dets.points5 is not None else None
        lm = self.landmarker.landmarks(rgb, dets.boxes[i:i + 1], p5)
        return lm[0], self.embedder.embed(rgb, lm)[0]

    def soft_reference(self, real: np.ndarray, mask: np.ndarray, box: np.ndarray,
                       detail: float | None) -> np.ndarray | None:
        """The blur guard's reference: the descriptor of the real face blurred to a fake's ``detail``.

        Args:
            real: the real frame (H×W×3 RGB uint8).
            mask: its manipulation mask.
            box: the destination face's box.
            detail: the fake's ``detail_ratio``.

        Returns:
            The (128,) descriptor, or None when the fake is about as detailed as the real face
            (``DETAIL_MATCH``) or its detail is unknown: then the sharp real face is the only reference.
        """
        if detail is None or detail >= DETAIL_MATCH:
            return None
        return self.face_at(blur_like(real, mask, detail)[0], box)[1]

    def _detect(self, rgb: np.ndarray):
        if self._detector is None:  # built on first use: measuring without swap_success never needs it
            from dflray.detect import build_detector

            self._detector = build_detector(self._detect_cfg)
        return self._detector.detect([rgb])[0]

    # -------------------------------------------------------------- videos

    def measure_fake(self, fake_uri: str, real_uri: str, mask_uri: str, dst_faces: Any,
                     source_embedding: np.ndarray | None, sample_frames: int = 8) -> dict[str, float | None]:
        """The quality metrics of one fake video (every name in ``QUALITY_METRICS``).

        The mask video is read once first (only its per-frame boxes are kept) to choose the sample
        frames; then the fake, the real video and the mask are decoded in step, keeping only the previous
        frame, so memory stays bounded for long videos.

        Args:
            fake_uri: the fake video.
            real_uri: the real (destination) video it was made from; same frame count and timestamps.
            mask_uri: its manipulation mask video (``Transcoder(..., mask_path=...)``).
            dst_faces: the destination video's faceset rows (pyarrow Table or dict of arrays) with
                ``frame_index`` and ``bbox`` (x1, y1, x2, y2); other columns are ignored. In each sampled
                frame the face whose box overlaps the mask's box most is the one that was swapped.
            source_embedding: the source identity's mean descriptor (128,), or several (N, 128) to be
                averaged; None leaves ``id_distance_source`` and ``swap_success`` unmeasured.
            sample_frames: frames (evenly spaced among frames with a non-empty mask and a dst face) the
                identity, pose and expression metrics and ``swap_success`` are measured on.

        Returns:
            ``{metric: value}`` for every name in ``QUALITY_METRICS``; None where not measurable (no
            sampled frame, no mask edge, a one-frame video, no source embedding). A sampled frame where
            the detector finds no face at the destination's box in the fake is a failure for
            ``swap_success``; the other identity metrics still read the face inside that box.

        Raises:
            ValueError: for ``sample_frames < 1``, a ``dst_faces`` without ``frame_index``/``bbox``, a bad
                ``source_embedding``, or videos whose frame counts, indices or sizes differ.
            dflray.io.video.VideoError: when a video cannot be decoded.
        """
        from dflray.io.video import decode_range, read_masks

        if sample_frames < 1:
            raise ValueError(f"sample_frames must be >= 1, got {sample_frames}")
        frame_index = _column(dst_faces, "frame_index", None)
        bbox = _column(dst_faces, "bbox", 4)
        if frame_index is None or bbox is None:
            raise ValueError("dst_faces must have frame_index and bbox columns")
        src = _source_mean(source_embedding) if source_embedding is not None else None

        mask_boxes = {}
        for idx, m in read_masks(mask_uri):
            box = _bbox(_binary(m))
            if box is not None:
                mask_boxes[idx] = box
        samples = _pick_samples(mask_boxes, frame_index, bbox, sample_frames)

        flick, seams = _FlickerAcc(), _SeamAcc()
        d_src, d_dst, poses, exprs, details = [], [], [], [], []
        # per sampled frame: the face re-detected in the fake (or None), the real one, the real one blurred
        # to the fake's detail (None when the fake is as detailed)
        found, reals, softs = [], [], []
        streams = (decode_range(fake_uri), decode_range(real_uri), read_masks(mask_uri))
        for (fi, fake), (ri, real), (mi, mask) in _in_step(
                *streams, error="fake, real and mask videos differ in frame count"):
            if not fi == ri == mi:
                raise ValueError(f"fake, real and mask videos are out of step: frame indices {fi}, {ri}, {mi}")
            flick.add(fake, real, mask)
            seams.add(fake, real, mask)
            if fi in samples:
                lm_f, emb_f = self.face_at(fake, samples[fi])
                lm_r, emb_r = self.face_at(real, samples[fi])
                d_dst.append(identity_distance(emb_f, emb_r))
                detail = detail_ratio(fake, real, mask)
                details.append(detail)
                if src is not None:
                    d_src.append(identity_distance(emb_f, src))
                    redetected = self.detect_at(fake, samples[fi])
                    found.append(None if redetected is None else redetected[1])
                    reals.append(emb_r)
                    softs.append(None if redetected is None else self.soft_reference(real, mask, samples[fi], detail))
                try:
                    exprs.append(similarity_nme(lm_f, lm_r))
                    # A mirror pose solution (roll pinned at ±90°) is not a measurement; skip that frame.
                    pf = _pose(lm_f, self.face_type, self.pose_size)
                    pr = _pose(lm_r, self.face_type, self.pose_size)
                    if not (pf[3] or pr[3]):
                        poses.append(float(np.mean([_angle_diff(a, b) for a, b in zip(pf[:3], pr[:3])])))
                except ValueError:  # degenerate landmarks (all points on one pixel): not measurable
                    pass

        return {
            "id_distance_source": float(np.median(d_src)) if d_src else None,
            "id_distance_target": float(np.median(d_dst)) if d_dst else None,
            "pose_error": float(np.mean(poses)) if poses else None,
            "expression_error": float(np.mean(exprs)) if exprs else None,
            "flicker": flick.value(),
            "seam": seams.value(),
            "detail": float(np.median([d for d in details if d is not None])) if any(
                d is not None for d in details) else None,
            "swap_success": swap_success(found, reals, src, soft_embeddings=softs) if src is not None else None,
        }


def image_embedding(rgb: np.ndarray, measurer: FaceMeasurer | None = None) -> np.ndarray | None:
    """The (128,) identity descriptor of the largest face in an RGB photo, or None when it has no face.

    Args:
        rgb: H×W×3 RGB uint8 photo.
        measurer: a loaded ``FaceMeasurer`` to reuse (a new one is built otherwise: slow, models load).

    Example:
        >>> d = identity_distance(image_embedding(photo_a), image_embedding(photo_b))  # doctest: +SKIP
    """
    return (measurer or FaceMeasurer()).image_embedding(rgb)
