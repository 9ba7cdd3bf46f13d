"""Aligned face crops of a generated dataset's published videos, the way DeepfakeBench crops them.

``video_crops(dataset, row)`` gives the crops of one published video (a row of ``index.parquet``): a fixed
number of frames, evenly spaced (``sample_frames``), each face aligned by DeepfakeBench's five-point
similarity at its scale (``dflray.face.dfb_align``), with its manipulation mask and 81 landmarks in the
crop. ``dflray export-dataset --format deepfakebench`` writes them as files; ``dflray evaluate`` feeds them
to detectors.

Where the faces come from: the dataset's faceset (``<work>/faceset``, ``work_of(dataset)``), extracted
from the real input videos. Every published video, real or fake, is frame-aligned with its real input
video (``source_uri``; a fake's is its target video: perturbations are photometric and compression
only), so the faceset's landmarks of frame ``i`` of ``source_uri`` locate the face in frame ``i`` of the
published video. Per frame the face is:

- REAL: the largest face (bounding-box area), as DeepfakeBench takes the biggest dlib detection;
- FAKE: the face that was swapped: the face whose box overlaps the frame's mask box most
  (``frames.parquet``'s ``bbox``); frames without a swap (no mask box) are no candidates, so every crop
  of a fake shows a manipulated face.

Only frames with landmarks are candidates (extraction may have taken every n-th frame). A fake's mask is
frame ``i`` of its mask video (``mask_path``), warped with the face's matrix (soft values kept); a real
video's masks are all zero.

Example:
    >>> rows = pq.read_table("ds/index.parquet").to_pylist()  # doctest: +SKIP
    >>> crops = video_crops("ds", rows[0], frames=32, size=256)  # doctest: +SKIP
    >>> crops.images.shape, crops.landmarks.shape  # doctest: +SKIP
    ((32, 256, 256, 3), (32, 81, 2))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from dflray.dataset.stages.base import work_of
from dflray.face.dfb_align import align_face
from dflray.faceset import face_holders, read_video_faces, video_id
from dflray.io import schema
from dflray.io.storage import arrow_filesystem, exists, join
from dflray.io.video import decode_range, read_masks

__all__ = ["VideoCrops", "pick_faces", "sample_frames", "video_crops"]

# Wanted frames further apart than this are decoded after a seek (to the keyframe before them) instead of
# by decoding every frame between them: x264's default keyframe interval.
_SEEK_GAP = 250


@dataclass(frozen=True)
class VideoCrops:
    """The aligned face crops of one published video.

    Attributes:
        video_id: index.parquet's ``video_id``.
        frame_indices: (n,) int64 frame numbers in the published video, ascending.
        images: (n, size, size, 3) uint8 RGB aligned face crops.
        masks: (n, size, size) uint8 0..255 manipulation mask in the crop (zeros for a REAL video).
        landmarks: (n, 81, 2) float32 landmarks in crop pixels (68 dlib points + 13 estimated forehead
            points, ``dflray.face.dfb_align.landmarks_81``), clamped into the crop.
    """

    video_id: str
    frame_indices: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    landmarks: np.ndarray


def sample_frames(candidates: Sequence[int], n: int) -> list[int]:
    """``n`` frames evenly spaced over ``candidates`` (all of them when there are fewer), ascending.

    Deterministic: the positions are ``floor(linspace(0, len - 1, n))`` of the sorted, de-duplicated
    candidates, as DeepfakeBench's ``fixed_num_frames`` mode picks frames (there over every frame of the
    video, here over the frames that have a face, so no pick is lost to a frame without one).

    Args:
        candidates: frame indices that may be taken.
        n: how many to take (>= 1).

    Example:
        >>> sample_frames(range(0, 100, 10), 4)
        [0, 30, 60, 90]
        >>> sample_frames([5, 3], 32)
        [3, 5]
    """
    if n < 1:
        raise ValueError(f"frames: must be >= 1, got {n}")
    pool = sorted({int(c) for c in candidates})
    if len(pool) <= n:
        return pool
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n)]


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _area(np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def pick_faces(frame_index: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
               mask_boxes: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """The face to crop in each frame: frame index → its (68, 2) landmarks.

    Args:
        frame_index: (N,) frame of each face row.
        boxes: (N, 4) x1, y1, x2, y2 of each face.
        landmarks: (N, 68, 2) landmarks of each face.
        mask_boxes: for a fake, frame → the mask's box in that frame (frames with a swap only); None for a
            real video.

    Returns:
        REAL: per frame the largest face. FAKE: per frame with a mask box, the face whose box overlaps it
        most (frames where no face overlaps it are left out).
    """
    best: dict[int, tuple[float, int]] = {}
    for i, (f, box) in enumerate(zip(np.asarray(frame_index).tolist(), np.asarray(boxes, dtype=np.float64))):
        if mask_boxes is None:
            score = _area(box)
        elif f in mask_boxes:
            score = _iou(box, mask_boxes[f])
            if score <= 0:
                continue
        else:
            continue
        if f not in best or score > best[f][0]:
            best[f] = (score, i)
    return {f: np.asarray(landmarks[i], dtype=np.float64) for f, (_, i) in sorted(best.items())}


@functools.lru_cache(maxsize=4)
def _holders(faceset: str) -> dict[str, list[str]]:
    """``face_holders`` of a faceset, once per process (a generated dataset's faceset no longer changes)."""
    return face_holders(faceset)


def _faces(dataset: str, source_uri: str) -> pa.Table:
    faceset = join(work_of(dataset), "faceset")
    vid = video_id(source_uri)
    table = read_video_faces(faceset, _holders(faceset).get(vid, []), vid,
                             columns=["frame_index", "face_index", "bbox", "landmarks", "frame_width",
                                      "frame_height"])
    if table is None or table.num_rows == 0:
        raise ValueError(f"no faces in the dataset's faceset for {source_uri} (faceset {faceset})")
    return table


def _mask_boxes(dataset: str, vid: str) -> dict[int, np.ndarray]:
    """frames.parquet's mask box per swapped frame of the published fake ``vid``."""
    import pyarrow.dataset as pads

    uri = join(dataset, "frames.parquet")
    if not exists(uri):
        raise ValueError(f"{uri} is missing: a fake's swapped frames are read from it")
    fs, path = arrow_filesystem(uri)
    t = pads.dataset(path, filesystem=fs, format="parquet").to_table(
        columns=["frame_index", "bbox"], filter=pads.field("video_id") == vid)
    out = {}
    for f, box in zip(t.column("frame_index").to_pylist(), t.column("bbox").to_pylist()):
        if box is not None and _area(np.asarray(box)) > 0:
            out[int(f)] = np.asarray(box, dtype=np.float64)
    return out


def _groups(wanted: Sequence[int]) -> Iterable[tuple[int, int]]:
    """[start, end) decode ranges covering ``wanted`` (sorted): a new range after every long gap."""
    start = prev = wanted[0]
    for f in wanted[1:]:
        if f - prev > _SEEK_GAP:
            yield start, prev + 1
            start = f
        prev = f
    yield start, prev + 1


def _decode(uri: str, wanted: Sequence[int]) -> dict[int, np.ndarray]:
    """The RGB frames ``wanted`` (sorted) of a video."""
    keep = set(wanted)
    out: dict[int, np.ndarray] = {}
    for start, end in _groups(wanted):
        for idx, rgb in decode_range(uri, start, end):
            if idx in keep:
                out[idx] = rgb
    return out


def _decode_masks(uri: str, wanted: Sequence[int]) -> dict[int, np.ndarray]:
    """The masks of frames ``wanted`` (sorted) of a mask video (its luma plane), stopping after the last."""
    keep, last = set(wanted), wanted[-1]
    out: dict[int, np.ndarray] = {}
    for idx, mask in read_masks(uri):
        if idx in keep:
            out[idx] = mask
        if idx >= last:
            break
    return out


def _missing(wanted: Sequence[int], got: dict[int, Any]) -> list[int]:
    return [f for f in wanted if f not in got]


def video_crops(dataset: str, row: dict, *, frames: int = 32, size: int = 256) -> VideoCrops:
    """The aligned face crops of one published video of a generated dataset.

    Args:
        dataset: the dataset root (``dflray generate --out``; any fsspec URL).
        row: its ``index.parquet`` row (``video_id``, ``path``, ``label``, ``source_uri``, and
            ``mask_path`` for a fake).
        frames: frames to take, evenly spaced over the frames that have the face (all when fewer).
        size: crop side in pixels.

    Returns:
        The crops, in frame order.

    Raises:
        ValueError: when the video has no face (or, for a fake, no swapped frame with a face), when a
            needed file or frame is missing, or for a bad ``frames``/``size``.
    """
    if size < 16:
        raise ValueError(f"size: must be >= 16, got {size}")
    vid, label = row["video_id"], row["label"]
    if label not in ("REAL", "FAKE"):
        raise ValueError(f"video {vid}: label must be REAL or FAKE, got {label!r}")
    faces = _faces(dataset, row["source_uri"])
    fake = label == "FAKE"
    mask_boxes = _mask_boxes(dataset, vid) if fake else None
    if fake and not row.get("mask_path"):
        raise ValueError(f"video {vid}: a FAKE row without mask_path")
    chosen = pick_faces(faces.column("frame_index").to_numpy(),
                        np.asarray(faces.column("bbox").to_pylist(), dtype=np.float64).reshape(-1, 4),
                        schema.landmarks_of(faces), mask_boxes)
    if not chosen:
        why = "no swapped frame (frames.parquet) has a face in the faceset" if fake else "no frame has a face"
        raise ValueError(f"video {vid}: {why}")
    picked = sample_frames(list(chosen), frames)

    rgb = _decode(join(dataset, row["path"]), picked)
    if _missing(picked, rgb):
        raise ValueError(f"video {vid}: frames {_missing(picked, rgb)[:5]} of {row['path']} could not be decoded "
                         "(the faceset has faces there)")
    width, height = faces.column("frame_width")[0].as_py(), faces.column("frame_height")[0].as_py()
    shape = next(iter(rgb.values())).shape[:2]
    if (width and height) and shape != (height, width):
        raise ValueError(f"video {vid}: frames are {shape[1]}x{shape[0]} but its source's faces were found in "
                         f"{width}x{height} frames")
    masks = _decode_masks(join(dataset, row["mask_path"]), picked) if fake else {}
    if fake and _missing(picked, masks):
        raise ValueError(f"video {vid}: the mask video {row['mask_path']} has no frames {_missing(picked, masks)[:5]}")

    n = len(picked)
    images = np.zeros((n, size, size, 3), np.uint8)
    mask_out = np.zeros((n, size, size), np.uint8)
    lms = np.zeros((n, 81, 2), np.float32)
    for k, f in enumerate(picked):
        crop, m, lm = align_face(rgb[f], chosen[f], size, masks.get(f))
        images[k], lms[k] = crop, lm
        if m is not None:
            mask_out[k] = m
    return VideoCrops(video_id=vid, frame_indices=np.asarray(picked, dtype=np.int64), images=images,
                      masks=mask_out, landmarks=lms)
