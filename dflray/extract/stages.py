"""The extraction stages as pure functions, plus the thin callable classes Ray Data runs.

decode_segment (Ray task) → DetectStage (actor: detector loaded once) → FaceStage (actor: landmarks,
alignment, masks, pose, blur, identity, encoding) → Parquet rows of the ``faces`` schema.
With CPU detection the two actors are fused into one ``DetectFaceStage`` (see ExtractConfig.stages).

Rows between stages are numpy batches: ``frame`` (H×W×3 uint8, sizes may differ between videos),
the video's keys, and after detection ``dets``: a flat float32 array of N×15 numbers per frame
(box x1 y1 x2 y2, score, 5 points), N ≥ 1 — frames without faces are dropped at detection.
"""

from __future__ import annotations

import itertools
import math
import traceback
from typing import Any, Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dflray.config import AlignConfig, DecodeConfig, DetectConfig, LandmarkConfig
from dflray.detect import Detections, build_detector, build_landmarker
from dflray.detect.dlib_models import IdentityEmbedder
from dflray.extract.ledger import FileLedger
from dflray.face.align import get_transform_mat, transform_points, warp_to_crop
from dflray.face.masks import hull_mask
from dflray.face.pose import estimate_pitch_yaw_roll
from dflray.face.quality import blur_score
from dflray.io import schema
from dflray.io.storage import atomic_write
from dflray.io.video import VideoError, decode_frames

_DET_WIDTH = 15


# ------------------------------------------------------------------------------------------------
# decode


def decode_segment(seg: dict[str, Any], cfg: DecodeConfig, ledger=None) -> Iterator[dict[str, Any]]:
    """Decodes one frame range of one video, yielding one row per kept frame: its keys, its index (the
    position in presentation order), its timestamp (presentation time in seconds from the stream's start)
    and the frame. ``seg`` may carry ``start_pts``, the pts of the range's first frame (from
    ``dflray.io.video.frame_times``), which spares each worker a scan of the file.

    Reports ``(frames decoded, error)`` for the segment to ``ledger`` (a ``FileLedger``, or None);
    a video that breaks mid-stream keeps the frames decoded before the break.
    """
    end = None if seg["end"] < 0 else int(seg["end"])
    decoded, error = 0, None
    try:
        for f in decode_frames(seg["uri"], int(seg["start"]), end, cfg.every_n, cfg.threads,
                               start_pts=_optional_int(seg.get("start_pts"))):
            decoded += 1
            yield {"video_id": seg["video_id"], "uri": seg["uri"], "fps": float(seg["fps"]),
                   "frame_index": f.index, "timestamp": f.time, "frame": f.rgb}
    except VideoError as e:
        error = ("VideoError", str(e))
    except Exception as e:  # a codec or I/O failure in one video must not kill the job
        error = (type(e).__name__, f"{e}\n{traceback.format_exc(limit=3)}")
    if ledger is not None:
        ledger.record(seg["video_id"], int(seg["segment"]), decoded, error)


def _optional_int(v: Any) -> int | None:
    """An int column's value as Ray Data hands it over: None, or NaN (a column with nulls can arrive as
    floats, as a numpy scalar or 0-d array), stand for no value."""
    if v is None or math.isnan(float(v)):
        return None
    return int(v)


# ------------------------------------------------------------------------------------------------
# detect


def pack_detections(d: Detections) -> np.ndarray:
    """Flattens detections to N×15 float32 (box, score, 5 points; NaN points if the detector has none)."""
    pts = d.points5 if d.points5 is not None else np.full((len(d), 5, 2), np.nan, np.float32)
    return np.concatenate([d.boxes, d.scores[:, None], pts.reshape(-1, 10)], axis=1).astype(np.float32).ravel()


def unpack_detections(flat: np.ndarray) -> Detections:
    a = np.asarray(flat, np.float32).reshape(-1, _DET_WIDTH)
    pts = a[:, 5:].reshape(-1, 5, 2)
    return Detections(a[:, :4], a[:, 4], None if np.isnan(pts).all() and len(a) else pts)


def report_failure(ledger, batch: dict[str, np.ndarray], j: int, stage: str, error: Exception) -> None:
    """Records that frame ``j`` of ``batch`` failed in ``stage`` (the job goes on without it)."""
    if ledger is None:
        raise error
    ledger.fail(str(batch["video_id"][j]), int(batch["frame_index"][j]), stage,
                type(error).__name__, str(error) or repr(error))


class DetectStage:
    """Ray Data actor: loads the detector once, detects on batches of frames, drops faceless frames.

    A batch the detector cannot process is retried frame by frame; a frame that still fails is reported
    to ``ledger`` (an error row) and dropped, so one bad frame never ends the job.
    """

    def __init__(self, cfg: DetectConfig, ledger=None):
        self.detector = build_detector(cfg)
        self.ledger = ledger

    def _detect(self, batch: dict[str, np.ndarray]) -> list[Detections]:
        frames = list(batch["frame"])
        try:
            return self.detector.detect(frames)
        except Exception:
            out = []
            for j, frame in enumerate(frames):
                try:
                    out += self.detector.detect([frame])
                except Exception as e:
                    report_failure(self.ledger, batch, j, "detect", e)
                    out.append(Detections.empty())
            return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dets = self._detect(batch)
        keep = [i for i, d in enumerate(dets) if len(d)]
        # Fancy indexing copies every frame; skip it in the common case where every frame has a face.
        out = dict(batch) if len(keep) == len(dets) else {k: v[keep] for k, v in batch.items()}
        packed = [pack_detections(dets[i]) for i in keep]
        arr = np.empty(len(keep), dtype=object)
        arr[:] = packed
        out["dets"] = arr
        out["detector"] = np.array([self.detector.spec.name] * len(keep))
        return out


# ------------------------------------------------------------------------------------------------
# landmarks, alignment and everything per face


def encode_image(rgb: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encodes an RGB (or single-channel) image as JPEG or PNG bytes."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + fmt, img, params)
    if not ok:
        raise ValueError(f"cannot encode image as {fmt}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """Decodes JPEG/PNG bytes to RGB uint8 (or a single-channel mask)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("cannot decode image bytes")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def face_rows(frame: np.ndarray, dets: Detections, landmarks: np.ndarray, embeddings: np.ndarray | None,
              align: AlignConfig, keys: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``faces`` rows of one frame: aligned crop, hull mask, pose and blur per face.

    Args:
        frame: RGB uint8 frame.
        dets: the frame's detections (boxes, scores, optional 5 points).
        landmarks: (N, 68, 2) frame-pixel landmarks, one set per detection.
        embeddings: (N, 128) identity descriptors, or None.
        align: crop settings (face type, size, encoding).
        keys: per-frame values copied into every row (video_id, frame_index, source_uri, ...).
    """
    rows = []
    size = align.size
    for i, lm in enumerate(landmarks):
        mat = get_transform_mat(lm, size, align.face_type)
        crop = warp_to_crop(frame, mat, size)
        crop_lm = transform_points(lm, mat)
        mask = hull_mask((size, size), crop_lm)
        pitch, yaw, roll = estimate_pitch_yaw_roll(crop_lm, size)
        rows.append({
            **keys,
            "face_index": i,
            "bbox": dets.boxes[i],
            "det_score": float(dets.scores[i]),
            "points5": dets.points5[i] if dets.points5 is not None else np.full(10, np.nan, np.float32),
            "landmarks": lm,
            "face_type": align.face_type,
            "size": size,
            "align_mat": np.asarray(mat, np.float64),
            "yaw": math.degrees(yaw),
            "pitch": math.degrees(pitch),
            "roll": math.degrees(roll),
            "blur": blur_score(crop, mask),
            "image": encode_image(crop, align.image_format, align.jpeg_quality),
            "image_format": align.image_format,
            "mask": encode_image(mask * 255, "png"),
            "mask_source": "hull",
            "embedding": None if embeddings is None else embeddings[i],
        })
    return rows


class FaceStage:
    """Ray Data actor: landmarker and identity model loaded once; emits ``faces`` rows as Arrow.

    A frame whose faces cannot be processed (degenerate landmarks, say) is reported to ``ledger`` as an
    error row and skipped; the rest of the batch goes on.
    """

    def __init__(self, landmarks: LandmarkConfig, align: AlignConfig, ledger=None):
        self.landmarker = build_landmarker(landmarks)
        self.embedder = IdentityEmbedder() if landmarks.embedding else None
        self.align = align
        self.ledger = ledger

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for j in range(len(batch["frame_index"])):
            try:
                rows += self._frame_rows(batch, j)
            except Exception as e:
                report_failure(self.ledger, batch, j, "faces", e)
        return schema.table_from_rows("faces", rows)

    def _frame_rows(self, batch: dict[str, np.ndarray], j: int) -> list[dict[str, Any]]:
        frame = batch["frame"][j]
        dets = unpack_detections(batch["dets"][j])
        lms = self.landmarker.landmarks(frame, dets.boxes, dets.points5)
        emb = self.embedder.embed(frame, lms) if self.embedder is not None else None
        idx = int(batch["frame_index"][j])
        if "timestamp" in batch:  # the frame's own presentation time (decode_segment)
            timestamp: float | None = float(batch["timestamp"][j])
        else:
            fps = float(batch["fps"][j])
            timestamp = idx / fps if fps > 0 else None
        keys = {
            "video_id": str(batch["video_id"][j]),
            "frame_index": idx,
            "source_uri": str(batch["uri"][j]),
            "frame_width": int(frame.shape[1]),
            "frame_height": int(frame.shape[0]),
            "timestamp": timestamp,
            "detector": str(batch["detector"][j]),
            "landmarker": self.landmarker.spec.name,
        }
        return face_rows(frame, dets, lms, emb, self.align, keys)


class DetectFaceStage:
    """Ray Data actor running detection and the face stage back to back (CPU-only detection).

    When the detector runs on CPU there is nothing to gain from a separate detector pool, and a lot to
    lose: every frame would cross the object store twice. One actor per core running the whole chain
    keeps every core busy with no copies (the same reason Ray Data fuses compatible operators).
    """

    def __init__(self, detect: DetectConfig, landmarks: LandmarkConfig, align: AlignConfig, ledger=None):
        self.detect = DetectStage(detect, ledger)
        self.faces = FaceStage(landmarks, align, ledger)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.faces(self.detect(batch))


class SegmentStage:
    """Ray Data actor that decodes a whole frame range itself and runs detect + faces on it.

    Used when detection has no GPU (``stages=auto``/``fused``): frames never enter the object store,
    only segment descriptors go in, and each actor keeps one core busy with the whole chain. Faces are
    made one table per ``batch_size`` frames and streamed to the file, so memory stays bounded for any
    segment length.

    Each segment is written by the actor itself: its faces go to the row's ``faces_uri`` (one Parquet
    file, renamed into place only when whole, so a segment retried after a lost node rewrites the same
    file), its decode record and frame failures to the ``FileLedger`` at the row's ``ledger``, and one
    small row comes out in their place: ``{part, video_id, segment, faces}``. So one pipeline serves
    many commit chunks (``dflray.extract.pipeline``), and no face row passes through the driver.
    """

    def __init__(self, decode: DecodeConfig, detect: DetectConfig, landmarks: LandmarkConfig, align: AlignConfig):
        self.decode = decode
        self.stage = DetectFaceStage(detect, landmarks, align)
        self.batch_size = landmarks.batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for i in range(len(batch["video_id"])):
            seg = {k: v[i] for k, v in batch.items()}
            ledger = FileLedger(str(seg["ledger"]))
            self.stage.detect.ledger = self.stage.faces.ledger = ledger  # this segment's chunk
            faces = _write_tables(str(seg["faces_uri"]), self._tables(seg, ledger))
            yield pa.table({"part": [int(seg["part"])], "video_id": [str(seg["video_id"])],
                            "segment": [int(seg["segment"])], "faces": [faces]})

    def _tables(self, seg: dict[str, Any], ledger: FileLedger) -> Iterator[pa.Table]:
        rows: list[dict[str, Any]] = []
        for row in decode_segment(seg, self.decode, ledger):
            rows.append(row)
            if len(rows) == self.batch_size:
                yield self.stage(_as_batch(rows))
                rows = []
        if rows:
            yield self.stage(_as_batch(rows))


def _write_tables(uri: str, tables: Iterator[pa.Table]) -> int:
    """Streams ``tables`` (the faces schema) into one Parquet file at ``uri``, renamed into place when
    whole; no file when they hold no rows. Returns the rows written."""
    first = next((t for t in tables if t.num_rows), None)
    if first is None:
        return 0
    rows = 0
    with atomic_write(uri, "wb") as f, pq.ParquetWriter(f, first.schema) as w:
        for t in itertools.chain([first], tables):
            if t.num_rows:
                w.write_table(t)
                rows += t.num_rows
    return rows


def _as_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows of one decoded segment (same video, same frame size) as a numpy batch."""
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0] if k != "frame"}
    batch["frame"] = np.stack([r["frame"] for r in rows])
    return batch
