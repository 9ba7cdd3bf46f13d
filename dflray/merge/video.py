"""One dst video through the merge: which faces to swap, their tracks, and the frame loop.

Pure functions and one streaming loop, no Ray: ``dflray.merge.pipeline`` runs ``merge_video`` on
Ray workers with a shared predictor pool, ``bench/merge.py`` and the tests run it in-process.

- ``video_seed`` / ``draw_settings``: each video's seed (derived from the job's seed and the video id)
  and the merge settings drawn from it (``MergeConfig.vary``), so a rerun draws the same.
- ``select_faces``: the faces to swap: all, the dominant identity, or the identity of a reference
  image (dlib descriptors, at most one face per frame).
- ``plan_faces``: links the selected faces into tracks, fills short gaps by interpolation, smooths
  each track's landmarks (``MergeConfig.smooth_window``) and computes each face's motion (for motion
  blur), giving per frame the faces to paste.
- ``merge_video``: decodes the video, crops every planned face, sends the crops of ``batch_frames``
  frames to the model at once (one batch in flight while the next is cropped), pastes, and encodes
  the frame and its manipulation mask in order. Memory is two batches of frames, whatever the length.

Example:
    >>> plan = plan_faces(frame_idx, landmarks, np.ones(len(frame_idx), bool))  # doctest: +SKIP
    >>> with Transcoder("dst.mp4", "/tmp/out.mp4", mask_path="/tmp/mask.mp4") as t:  # doctest: +SKIP
    ...     rows = merge_video(t, plan, InlinePredict(predictor), MergeSettings(), face_type="whole_face",
    ...                        resolution=256, seed=1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from dflray.config import MergeSettings, Vary, from_dict, to_dict
from dflray.face.align import transform_points
from dflray.io.video import SourceFrame, Transcoder
from dflray.merge.blend import merge_spec, paste, prepare_crop
from dflray.merge.masks import xseg_masks
from dflray.merge.temporal import face_motion, smooth_landmarks

__all__ = ["InlinePredict", "MethodPredict", "PlannedFace", "PredictFn", "draw_settings", "link_tracks", "merge_video",
           "plan_faces", "select_faces", "settings_sha256", "video_seed"]


# ------------------------------------------------------------------------------ settings per video


def video_seed(seed: int, video_id: str) -> int:
    """The seed of one video: stable for (job seed, video id), independent of order and workers.

    Example:
        >>> video_seed(0, "abc") == video_seed(0, "abc") != video_seed(1, "abc")
        True
    """
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def draw_settings(base: MergeSettings, vary: Sequence[Vary], seed: int) -> MergeSettings:
    """``base`` with each ``vary`` field drawn from its distribution with ``seed``.

    Example:
        >>> s = draw_settings(MergeSettings(), [Vary("erode", low=-10, high=10)], 7)
        >>> -10 <= s.erode <= 10
        True
    """
    if not vary:
        return base
    rng = np.random.default_rng(seed)
    values: dict[str, Any] = {}
    for v in vary:
        if v.choices:
            p = None
            if v.weights:
                w = np.asarray(v.weights, np.float64)
                p = w / w.sum()
            values[v.field] = v.choices[int(rng.choice(len(v.choices), p=p))]
        else:
            values[v.field] = int(rng.integers(v.low, v.high + 1))
    return from_dict(MergeSettings, {**to_dict(base), **values})


def settings_sha256(settings: MergeSettings, **extra: Any) -> str:
    """A hash of the settings (and any other choices, e.g. smoothing) that shaped an output."""
    doc = json.dumps({"settings": dataclasses.asdict(settings), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


# ------------------------------------------------------------------------------ identity


def _closest_per_frame(frame_idx: np.ndarray, dist: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Of the kept faces, only the closest one per frame (one person is in a frame once)."""
    out = np.zeros_like(keep)
    best: dict[int, int] = {}
    for i in np.flatnonzero(keep):
        f = int(frame_idx[i])
        if f not in best or dist[i] < dist[best[f]]:
            best[f] = i
    out[list(best.values())] = True
    return out


def select_faces(frame_idx: np.ndarray, embeddings: np.ndarray | None, mode: str, *,
                 reference: np.ndarray | None = None, threshold: float = 0.6, max_sample: int = 2000) -> np.ndarray:
    """Which faces of a video to swap.

    Args:
        frame_idx: (N,) frame index of each face.
        embeddings: (N, 128) dlib identity descriptors (rows of NaN where missing), or None.
        mode: ``all``, ``dominant`` (the identity with the most faces) or ``reference``.
        reference: (128,) descriptor of the person to swap, for ``reference``.
        threshold: descriptor distance under which two faces are one person.
        max_sample: faces compared pairwise to find the dominant identity (a random sample of longer
            videos; the choice is deterministic).

    Returns:
        (N,) bool: faces to swap, at most one per frame unless ``mode`` is ``all``.

    Raises:
        ValueError: when the mode needs descriptors the faceset does not have.
    """
    frame_idx = np.asarray(frame_idx)
    n = len(frame_idx)
    if mode == "all" or n == 0:
        return np.ones(n, bool)
    have = np.isfinite(embeddings).all(axis=1) if embeddings is not None else np.zeros(n, bool)
    if not np.any(have):
        if np.unique(frame_idx).size == n:  # never two faces in a frame: every face is the one person
            return np.ones(n, bool)
        raise ValueError(f"identity.swap={mode} needs identity embeddings, and this faceset has none while "
                         "frames hold several faces: extract with landmarks.embedding=true, or set identity.swap=all")
    emb = np.where(have[:, None], embeddings, np.nan).astype(np.float64)
    if mode == "reference":
        if reference is None:
            raise ValueError("identity.swap=reference needs a reference descriptor")
        centre = np.asarray(reference, np.float64)
    elif mode == "dominant":
        idx = np.flatnonzero(have)
        if idx.size > max_sample:
            idx = np.sort(np.random.default_rng(0).choice(idx, max_sample, replace=False))
        e = emb[idx]
        d = np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))
        close = d < threshold
        core = close[int(np.argmax(close.sum(1)))]
        centre = e[core].mean(0)
    else:
        raise ValueError(f"unknown identity mode {mode!r}")
    dist = np.sqrt(((emb - centre) ** 2).sum(-1))
    dist = np.where(np.isfinite(dist), dist, np.inf)
    return _closest_per_frame(frame_idx, dist, dist < threshold)


# ------------------------------------------------------------------------------ tracks


def _centre_size(lm: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = lm.min(0), lm.max(0)
    return (lo + hi) / 2, float(np.hypot(*(hi - lo)))


def link_tracks(frame_idx: np.ndarray, landmarks: np.ndarray, *, max_gap: int = 0, max_jump: float = 0.5) -> np.ndarray:
    """Links faces into tracks frame to frame: each face joins the nearest track seen within
    ``max_gap + 1`` frames whose centre is less than ``max_jump`` face sizes away, else starts one.

    Returns:
        (N,) int track id per face.
    """
    order = np.lexsort((np.arange(len(frame_idx)), frame_idx))
    ids = np.full(len(frame_idx), -1, np.int64)
    tracks: list[tuple[int, np.ndarray, float]] = []  # last frame, centre, size
    for f in np.unique(frame_idx):
        taken: set[int] = set()
        for i in order[frame_idx[order] == f]:
            c, size = _centre_size(landmarks[i])
            best, best_d = -1, np.inf
            for t, (last, tc, ts) in enumerate(tracks):
                if t in taken or not 0 < f - last <= max_gap + 1:
                    continue
                d = float(np.hypot(*(c - tc)))
                if d < max_jump * max(size, ts) and d < best_d:
                    best, best_d = t, d
            if best < 0:
                best = len(tracks)
                tracks.append((int(f), c, size))
            tracks[best] = (int(f), c, size)
            taken.add(best)
            ids[i] = best
    return ids


@dataclass(frozen=True)
class PlannedFace:
    """A face to paste: its (possibly smoothed or interpolated) landmarks and motion."""

    landmarks: np.ndarray
    motion: tuple[float, float]
    track: int


def _fill(track: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation of runs of at most ``max_gap`` missing frames between two known ones."""
    known = np.isfinite(track).all(axis=(1, 2))
    if max_gap <= 0 or known.all():
        return track
    out = track.copy()
    idx = np.flatnonzero(known)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            w = ((np.arange(a + 1, b) - a) / (b - a))[:, None, None]
            out[a + 1:b] = track[a] * (1 - w) + track[b] * w
    return out


def plan_faces(frame_idx: np.ndarray, landmarks: np.ndarray, selected: np.ndarray, *, smooth_window: int = 0,
               fill_gaps: int = 0) -> dict[int, list[PlannedFace]]:
    """Per frame, the faces to paste: selected faces linked into tracks, gaps of up to ``fill_gaps``
    frames interpolated, landmarks smoothed over ``smooth_window`` frames (0: off), and DFL's face
    motion per face.

    Args:
        frame_idx: (N,) frame index of each face.
        landmarks: (N, 68, 2) landmarks in frame pixels.
        selected: (N,) bool, faces to swap (``select_faces``).
        smooth_window: Savitzky-Golay window in frames (odd >= 3), or 0.
        fill_gaps: longest run of missing frames filled inside a track.

    Returns:
        {frame index: [PlannedFace, ...]} ordered by track.
    """
    frame_idx = np.asarray(frame_idx, np.int64)
    landmarks = np.asarray(landmarks, np.float64)
    sel = np.flatnonzero(selected)
    plan: dict[int, list[PlannedFace]] = {}
    if sel.size == 0:
        return plan
    ids = link_tracks(frame_idx[sel], landmarks[sel], max_gap=fill_gaps)
    for t in np.unique(ids):
        members = sel[ids == t]
        f0, f1 = int(frame_idx[members].min()), int(frame_idx[members].max())
        track = np.full((f1 - f0 + 1, 68, 2), np.nan)
        track[frame_idx[members] - f0] = landmarks[members]
        track = _fill(track, fill_gaps)
        if smooth_window:
            track = smooth_landmarks(track, smooth_window)
        power, deg = face_motion(track)
        for k in np.flatnonzero(np.isfinite(track).all(axis=(1, 2))):
            plan.setdefault(f0 + int(k), []).append(PlannedFace(track[k], (float(power[k]), float(deg[k])), int(t)))
    return plan


# ------------------------------------------------------------------------------ the frame loop


class PredictFn(Protocol):
    """Runs the swap model asynchronously: ``submit`` crops, ``result`` later (faces, masks)."""

    batch_size: int

    def submit(self, crops: np.ndarray) -> Any: ...

    def result(self, handle: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class InlinePredict:
    """A ``PredictFn`` that runs a predictor in this process (no overlap)."""

    def __init__(self, predictor, batch_size: int = 32):
        self.predictor = predictor
        self.batch_size = batch_size

    def submit(self, crops: np.ndarray):
        return self.predictor(crops)

    def result(self, handle):
        return handle


class MethodPredict:
    """A ``PredictFn`` that runs a training-free forgery method (``dflray.methods``, built for this video)
    in this process. Unlike a model it gets each crop's 68 landmarks, in crop pixels, too."""

    wants_landmarks = True

    def __init__(self, method, batch_size: int = 32):
        self.method = method
        self.batch_size = batch_size

    def submit(self, crops: np.ndarray, landmarks: np.ndarray):
        return self.method(crops, landmarks)

    def result(self, handle):
        return handle


@dataclass
class _Batch:
    frames: list[tuple[SourceFrame, list[tuple[np.ndarray, Any, PlannedFace]]]]
    handles: list[Any]


def _frame_row(frame: SourceFrame, faces: int, swapped: int, mask: np.ndarray | None) -> dict[str, Any]:
    row = {"frame_index": frame.index, "timestamp": frame.time, "faces": faces, "faces_swapped": swapped,
           "bbox": None, "mask_area": 0.0}
    if mask is not None:
        cols, rows_ = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if cols.size:
            row["bbox"] = np.array([cols[0], rows_[0], cols[-1] + 1, rows_[-1] + 1], np.float32)
            row["mask_area"] = float(np.count_nonzero(mask) / mask.size)
    return row


def merge_video(transcoder: Transcoder, plan: dict[int, list[PlannedFace]], predict: PredictFn,
                settings: MergeSettings, *, face_type: str, resolution: int, seed: int, batch_frames: int = 16,
                faces_per_frame: dict[int, int] | None = None, xseg: Any = None) -> list[dict[str, Any]]:
    """Merges every planned face of a video and writes each frame (and its mask) in order.

    Args:
        transcoder: the open input/output video pair.
        plan: ``plan_faces``'s faces per frame; frames without any pass through untouched.
        predict: the swap model (``InlinePredict`` or a Ray actor pool adapter).
        settings: this video's merge settings.
        face_type: the model's face type.
        resolution: the model's crop side.
        seed: this video's seed (random colour transfers draw from it per frame and face).
        batch_frames: frames whose crops go to the model together.
        faces_per_frame: faces in the faceset per frame, for the per-frame table.
        xseg: the ``XSeg`` model (``dflray.models.xseg``) for the ``XSeg-*`` mask modes; it runs here, on
            the dst frame and the swapped face of each batch.

    Returns:
        One per-frame row per output frame (``dflray.io.schema.MERGED_FRAMES`` without the output id).
    """
    mspec = merge_spec(settings).mask  # the mode strings, parsed once for the video
    if mspec.needs_xseg and xseg is None:
        raise ValueError(f"mask mode {settings.mask_mode!r} needs an XSeg model (xseg=PATH)")
    rows: list[dict[str, Any]] = []
    pending: deque[_Batch] = deque()
    batch: list[tuple[SourceFrame, list[tuple[np.ndarray, Any, PlannedFace]]]] = []
    faces_per_frame = faces_per_frame or {}

    wants_landmarks = getattr(predict, "wants_landmarks", False)  # a method (MethodPredict), not a model

    def submit(frames) -> None:
        crops = [crop for _, items in frames for crop, _, _ in items]
        b = predict.batch_size
        if wants_landmarks:
            marks = [transform_points(ctx.landmarks, ctx.face_mat) for _, items in frames for _, ctx, _ in items]
            handles = [predict.submit(np.stack(crops[i:i + b]), np.stack(marks[i:i + b]).astype(np.float32))
                       for i in range(0, len(crops), b)]
        else:
            handles = [predict.submit(np.stack(crops[i:i + b])) for i in range(0, len(crops), b)]
        pending.append(_Batch(frames, handles))

    def finish(b: _Batch) -> None:
        outs = [predict.result(h) for h in b.handles]
        faces = np.concatenate([o[0] for o in outs]) if outs else None
        fmasks = np.concatenate([o[1] for o in outs]) if outs else None
        dmasks = np.concatenate([o[2] for o in outs]) if outs else None
        xmasks = None
        if mspec.needs_xseg:
            xmasks = xseg_masks(xseg, [(frame.rgb, ctx, faces[k]) for k, (frame, ctx) in
                                       enumerate((f, c) for f, its in b.frames for _, c, _ in its)],
                                mspec.needs_xseg_prd, mspec.needs_xseg_dst)
        k = 0
        for frame, items in b.frames:
            out, mask = frame.rgb, None
            for j, (_, ctx, face) in enumerate(items):
                res = paste(out, ctx, faces[k], fmasks[k], dmasks[k], settings,
                            rng=np.random.default_rng([seed, frame.index, j]), motion=face.motion,
                            **(xmasks[k] if xmasks else {}))
                k += 1
                out = res.frame
                mask = res.mask if mask is None else np.maximum(mask, res.mask)
            transcoder.write(frame, out, mask)
            rows.append(_frame_row(frame, faces_per_frame.get(frame.index, 0), len(items), mask))

    for frame in transcoder.frames():
        items = []
        for face in plan.get(frame.index, ()):
            crop, ctx = prepare_crop(frame.rgb, face.landmarks, face_type, resolution, settings)
            items.append((crop, ctx, face))
        batch.append((frame, items))
        if len(batch) >= batch_frames:
            submit(batch)
            batch = []
            while len(pending) > 1:  # keep one batch at the model while the next is cropped
                finish(pending.popleft())
    if batch:
        submit(batch)
    while pending:
        finish(pending.popleft())
    return rows
