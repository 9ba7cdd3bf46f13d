"""Importing DeepFaceLab aligned facesets (``aligned/*.jpg``) into a Parquet faceset: ``dflray import-dfl``.

Each file's metadata is read by ``dflray.extract.dfl_jpeg`` (the APP15 segment, unpickled with a
restricted unpickler); here it is parsed into a ``DflFace`` (face type, landmarks, source geometry,
XSeg polygons and mask), turned into a faceset row (``face_row``: crop, hull mask, pose, blur, XSeg
label) and committed like an extraction chunk (``dflray.faceset.Commit``).

Example:
    >>> for uri, face, error in iter_aligned("workspace/data_src/aligned"):  # doctest: +SKIP
    ...     row = face_row(face, video_id="dfl", frame_index=i, source_uri=uri) if face else None
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import cv2
import numpy as np

from dflray.extract.dfl_jpeg import (
    _EOI,
    _GEOMETRY_TOLERANCE,
    _JPEG_SUFFIXES,
    _TO_DFL_FACE_TYPE,
    DFL_FACE_TYPES,
    MAX_FILE_BYTES,
    MAX_SIDE,
    DflMetadataError,
    _header_segments,
    _image_size,
    _jpeg_size,
    _strip_app15,
    read_dfl_metadata,
    write_dfl_jpeg,
)
from dflray.extract.stages import encode_image
from dflray.face.align import transform_points
from dflray.face.masks import hull_mask
from dflray.face.pose import estimate_pitch_yaw_roll
from dflray.face.quality import blur_score
from dflray.io.storage import list_files, open_uri

__all__ = ["DFL_FACE_TYPES", "MAX_FILE_BYTES", "DflFace", "DflMetadataError", "dfl_face_type", "face_row",
           "iter_aligned", "parse_dfl_face", "polys_to_mask", "read_dfl_metadata", "write_dfl_jpeg", "xseg_label"]


# ------------------------------------------------------------------------------------------------
# faces


@dataclass(frozen=True, eq=False)
class DflFace:
    """One DFL aligned face, its metadata checked and converted to dflray's conventions.

    Attributes:
        name: the file name, e.g. ``00012_0.jpg``.
        image: H×W×3 RGB uint8 aligned image (square).
        face_type: dflray face type (``half``, ``mid_full``, ``full``, ``whole_face``, ``head``).
        landmarks: (68, 2) float32 landmarks in aligned-image pixels.
        source_filename: the frame the face was cut from, or None.
        source_rect: the detector box (left, top, right, bottom) in source-frame pixels, or None.
        source_landmarks: (68, 2) float32 landmarks in source-frame pixels, or None.
        image_to_face_mat: (2, 3) float64 source-frame → aligned-image matrix, or None.
        xseg_polys: XSeg editor polygons in aligned-image pixels, in DFL's load order (includes first):
            ``[{"type": "include" | "exclude", "points": [[x, y], ...]}, ...]``; empty if none.
        xseg_mask: H×W uint8 0/255 mask from DFL's applied XSeg model, resized to the image, or None.
        eyebrows_expand_mod: DFL's brow lift for the hull mask (1.0 by default).
        jpeg: the aligned JPEG's bytes without DFL's APP15 segment (the image data as stored).
    """

    name: str
    image: np.ndarray
    face_type: str
    landmarks: np.ndarray
    source_filename: str | None
    source_rect: tuple[float, float, float, float] | None
    source_landmarks: np.ndarray | None
    image_to_face_mat: np.ndarray | None
    xseg_polys: list[dict]
    xseg_mask: np.ndarray | None
    eyebrows_expand_mod: float = 1.0
    jpeg: bytes = b""

    @property
    def size(self) -> int:
        """Side of the square aligned image."""
        return int(self.image.shape[0])


def _points(meta: dict, key: str, required: bool) -> np.ndarray | None:
    value = meta.get(key)
    if value is None:
        if required:
            raise DflMetadataError(f"DFL metadata has no {key}")
        return None
    try:
        pts = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DflMetadataError(f"{key} is not numeric: {e}") from e
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise DflMetadataError(f"{key} must be 68 finite (x, y) points, got shape {pts.shape}")
    return pts


def _face_type(meta: dict) -> str:
    name = meta.get("face_type", "full_face")
    if not isinstance(name, str) or name.lower() not in DFL_FACE_TYPES:
        raise DflMetadataError(f"unsupported DFL face_type {name!r} (supported: {', '.join(DFL_FACE_TYPES)})")
    return DFL_FACE_TYPES[name.lower()]


def _source_rect(meta: dict) -> tuple[float, float, float, float] | None:
    value = meta.get("source_rect")
    if value is None:
        return None
    try:
        rect = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DflMetadataError(f"source_rect is not numeric: {e}") from e
    if rect.shape != (4,) or not np.isfinite(rect).all():
        raise DflMetadataError(f"source_rect must be 4 numbers (l, t, r, b), got {rect.shape}")
    return tuple(float(v) for v in rect)  # type: ignore[return-value]


def _matrix(meta: dict) -> np.ndarray | None:
    value = meta.get("image_to_face_mat")
    if value is None:
        return None
    try:
        mat = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DflMetadataError(f"image_to_face_mat is not numeric: {e}") from e
    if mat.shape != (2, 3) or not np.isfinite(mat).all() or abs(np.linalg.det(mat[:, :2])) < 1e-12:
        raise DflMetadataError(f"image_to_face_mat must be an invertible finite 2×3 matrix, got {mat.shape}")
    return mat


def _polys(value: Any) -> list[dict]:
    """DFL's ``seg_ie_polys`` (current dict form or the older list of pairs) in DFL's load order."""
    if value is None:
        return []
    if isinstance(value, dict):
        raw = value.get("polys")
        if not isinstance(raw, list):
            raise DflMetadataError("seg_ie_polys has no 'polys' list")
        pairs = []
        for p in raw:
            if not isinstance(p, dict):
                raise DflMetadataError("seg_ie_polys entries must be dicts")
            pairs.append((p.get("type"), p.get("pts")))
    elif isinstance(value, list):
        pairs = [tuple(p) if isinstance(p, (list, tuple)) and len(p) == 2 else (None, None) for p in value]
    else:
        raise DflMetadataError(f"seg_ie_polys is a {type(value).__name__}")
    out = []
    for kind, pts in pairs:
        if type(kind) not in (int, bool) or int(kind) not in (0, 1):
            raise DflMetadataError(f"seg_ie_polys type must be 1 (include) or 0 (exclude), got {kind!r}")
        if pts is None:
            continue
        try:
            arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as e:
            raise DflMetadataError(f"seg_ie_polys points are not (x, y) pairs: {e}") from e
        if not np.isfinite(arr).all():
            raise DflMetadataError("seg_ie_polys points must be finite")
        if len(arr):
            out.append({"type": "include" if int(kind) == 1 else "exclude", "points": arr.tolist()})
    # DFL's SegIEPolys.load sorts: all include polygons, then all exclude ones (stable).
    return [p for p in out if p["type"] == "include"] + [p for p in out if p["type"] == "exclude"]


def _xseg_mask(value: Any, size: int) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim > 2:
            raise DflMetadataError("xseg_mask must be encoded image bytes (a uint8 array)")
        buf = value.tobytes()
    elif isinstance(value, bytes):
        buf = value
    else:
        raise DflMetadataError(f"xseg_mask is a {type(value).__name__}, not encoded image bytes")
    try:
        h, w = _image_size(buf)
    except DflMetadataError as e:
        raise DflMetadataError(f"xseg_mask: {e}") from None
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise DflMetadataError(f"xseg_mask size {w}×{h} out of range")
    mask = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DflMetadataError("xseg_mask cannot be decoded")
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    # DFL binarises applied masks at 0.5; JPEG-stored ones need it again after decoding.
    return np.where(mask >= 128, 255, 0).astype(np.uint8)


def parse_dfl_face(name: str, data: bytes) -> DflFace:
    """Reads one DFL aligned JPEG into a ``DflFace``.

    Args:
        name: file name, kept on the face.
        data: the file's bytes.

    Returns:
        The face with its image decoded and its metadata checked.

    Raises:
        DflMetadataError: If the file is truncated, not a JPEG, has no or unsafe DFL metadata, or a
            field is missing or malformed (landmarks, face type, matrix, polygons, mask).

    Example:
        >>> face = parse_dfl_face("00001_0.jpg", open("aligned/00001_0.jpg", "rb").read())  # doctest: +SKIP
        >>> face.face_type, face.landmarks.shape  # doctest: +SKIP
        ('whole_face', (68, 2))
    """
    data = bytes(data)
    meta = read_dfl_metadata(data)
    segments, sos = _header_segments(data)
    h, w = _jpeg_size(segments)
    if h != w or not 0 < w <= MAX_SIDE:
        raise DflMetadataError(f"aligned image must be square with side <= {MAX_SIDE}, got {w}×{h}")
    if data.rfind(_EOI) < sos:
        raise DflMetadataError("truncated JPEG: no end-of-image marker after the image data")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (h, w):
        raise DflMetadataError("JPEG image data cannot be decoded")
    try:
        source_filename = meta.get("source_filename")
        if source_filename is not None and not isinstance(source_filename, str):
            raise DflMetadataError("source_filename must be a string")
        brows = meta.get("eyebrows_expand_mod", 1.0)
        if type(brows) not in (int, float) or not math.isfinite(brows):
            raise DflMetadataError("eyebrows_expand_mod must be a finite number")
        return DflFace(
            name=name,
            image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            face_type=_face_type(meta),
            landmarks=_points(meta, "landmarks", required=True),
            source_filename=source_filename,
            source_rect=_source_rect(meta),
            source_landmarks=_points(meta, "source_landmarks", required=False),
            image_to_face_mat=_matrix(meta),
            xseg_polys=_polys(meta.get("seg_ie_polys")),
            xseg_mask=_xseg_mask(meta.get("xseg_mask"), w),
            eyebrows_expand_mod=float(brows),
            jpeg=_strip_app15(data, segments),
        )
    except DflMetadataError:
        raise
    except (TypeError, ValueError, OverflowError) as e:  # e.g. a 10**400 where a number belongs
        raise DflMetadataError(f"bad DFL metadata value ({type(e).__name__}: {e})") from e


def polys_to_mask(polys: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Rasterises XSeg polygons as DFL does: include polygons filled, exclude ones cleared, in order.

    Points are truncated to integer pixels before filling, as DFL's ``SegIEPolys.overlay_mask`` does.
    Pass the polygons in DFL's load order (``DflFace.xseg_polys`` already is: includes first).

    Args:
        polys: ``[{"type": "include" | "exclude", "points": [[x, y], ...]}, ...]``.
        shape: (H, W) of the mask.

    Returns:
        H×W uint8 mask, 255 inside and 0 outside.

    Raises:
        ValueError: If a polygon's type is unknown or its points are not finite (x, y) pairs.

    Example:
        >>> sq = [[2, 2], [8, 2], [8, 8], [2, 8]]
        >>> m = polys_to_mask([{"type": "include", "points": sq}], (10, 10))
        >>> int(m[5, 5]), int(m[0, 0])
        (255, 0)
    """
    mask = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    for i, poly in enumerate(polys):
        kind = poly.get("type")
        if kind not in ("include", "exclude"):
            raise ValueError(f"polys[{i}].type must be 'include' or 'exclude', got {kind!r}")
        pts = np.asarray(poly.get("points", []), dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise ValueError(f"polys[{i}].points must be finite")
        if len(pts):
            cv2.fillPoly(mask, [pts.astype(np.int32)], 255 if kind == "include" else 0)
    return mask


def iter_aligned(folder: str) -> Iterator[tuple[str, DflFace | None, str | None]]:
    """Reads every ``*.jpg``/``*.jpeg`` directly in a folder (any fsspec URL), in sorted order.

    Args:
        folder: DFL's ``aligned`` folder.

    Yields:
        ``(uri, face, None)`` for a readable face, ``(uri, None, "ErrorType: message")`` for a file
        that is not; one bad file never stops the others.

    Example:
        >>> errors = [e for _, face, e in iter_aligned("s3://bucket/aligned") if face is None]  # doctest: +SKIP
    """
    uris = [u for u in list_files(folder) if u.lower().endswith(_JPEG_SUFFIXES)]
    for uri in sorted(uris):
        try:
            with open_uri(uri) as f:
                data = f.read(MAX_FILE_BYTES + 1)
            face = parse_dfl_face(posixpath.basename(uri.replace("\\", "/")), data)
        except Exception as e:  # one unreadable file is an error row, never the end of the import
            yield uri, None, f"{type(e).__name__}: {e}"
        else:
            yield uri, face, None


def xseg_label(face: DflFace) -> np.ndarray | None:
    """The face's XSeg training label: its polygons rasterised, else DFL's applied mask, else None.

    DFL's XSeg trainer makes the same choice (polygons win over an applied mask).
    """
    if face.xseg_polys:
        return polys_to_mask(face.xseg_polys, face.image.shape[:2])
    return face.xseg_mask


def _source_geometry_fits(face: DflFace) -> bool:
    """Whether the source landmarks, mapped by ``image_to_face_mat``, land on the aligned landmarks."""
    if face.source_landmarks is None or face.image_to_face_mat is None:
        return False
    mapped = transform_points(face.source_landmarks, face.image_to_face_mat)
    return float(np.abs(mapped - face.landmarks).max()) <= max(2.0, _GEOMETRY_TOLERANCE * face.size)


def face_row(face: DflFace, *, video_id: str, frame_index: int, source_uri: str) -> dict[str, Any]:
    """A ``faces`` table row for an imported DFL face, filled as extraction fills it.

    Frame geometry: when the face has ``source_landmarks`` and ``image_to_face_mat`` the row's
    ``landmarks`` are the source-frame landmarks and ``align_mat`` is DFL's frame → aligned matrix,
    exactly extraction's meaning. Without them, or when they disagree with the aligned landmarks
    (mapped source landmarks off by more than 2% of the image side: the file was edited by hand and
    training crops would come out misaligned), the aligned image itself stands in for the frame:
    ``align_mat`` is the identity and ``landmarks`` are the aligned landmarks, so
    ``transform_points(landmarks, align_mat)`` is right either way; the frame size is then the
    image's and ``bbox`` the landmarks' bounds. With a source, the frame size is unknown to DFL and
    left null, and ``bbox`` is DFL's detector rect.

    ``image`` is the aligned JPEG as stored, minus DFL's pickle segment (not re-encoded); ``mask`` is
    the landmark hull mask (with the face's ``eyebrows_expand_mod``) as a PNG, as extraction writes
    it. Pose and blur come from the aligned landmarks and image. The XSeg columns (faces schema v2):
    ``xseg_polys`` (JSON of ``DflFace.xseg_polys`` or None) and ``xseg_label`` (PNG of
    ``xseg_label(face)`` as 0/255, or None); ``xseg``/``xseg_model`` are left for a model to fill.

    Args:
        face: the parsed face.
        video_id: the row's video id (an import groups a faceset under one or more ids).
        frame_index: the row's frame index.
        source_uri: where the face came from (the aligned file's URI).

    Returns:
        Column name → value, for ``schema.table_from_rows("faces", rows)``.

    Example:
        >>> rows = [face_row(f, video_id="dfl_src", frame_index=i, source_uri=u)
        ...         for i, (u, f, e) in enumerate(iter_aligned("aligned")) if f]  # doctest: +SKIP
    """
    size = face.size
    if _source_geometry_fits(face):
        landmarks = face.source_landmarks
        align_mat = face.image_to_face_mat
        bbox = face.source_rect
        frame_wh = (None, None)
    else:
        landmarks = face.landmarks
        align_mat = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        bbox = (*face.landmarks.min(axis=0).tolist(), *face.landmarks.max(axis=0).tolist())
        frame_wh = (size, size)
    mask = hull_mask((size, size), face.landmarks, eyebrows_expand=face.eyebrows_expand_mod)
    pitch, yaw, roll = estimate_pitch_yaw_roll(face.landmarks, size)
    label = xseg_label(face)
    return {
        "video_id": video_id,
        "frame_index": int(frame_index),
        "face_index": 0,
        "source_uri": source_uri,
        "frame_width": frame_wh[0],
        "frame_height": frame_wh[1],
        "timestamp": None,
        "bbox": None if bbox is None else np.asarray(bbox, np.float32),
        "det_score": None,
        "detector": "dfl-import",
        "points5": np.full(10, np.nan, np.float32),
        "landmarks": np.asarray(landmarks, np.float32),
        "landmarker": "dfl",
        "face_type": face.face_type,
        "size": size,
        "align_mat": np.asarray(align_mat, np.float64),
        "yaw": math.degrees(yaw),
        "pitch": math.degrees(pitch),
        "roll": math.degrees(roll),
        "blur": blur_score(face.image, mask),
        "image": face.jpeg,
        "image_format": "jpg",
        "mask": encode_image(mask * 255, "png"),
        "mask_source": "hull",
        "embedding": None,
        "identity": None,
        "xseg_polys": json.dumps(face.xseg_polys) if face.xseg_polys else None,
        "xseg_label": None if label is None else encode_image(label, "png"),
    }


def dfl_face_type(face_type: str) -> str:
    """DFL's name for a dflray face type (for writing DFL files), e.g. ``mid_full`` → ``midfull_face``."""
    try:
        return _TO_DFL_FACE_TYPE[face_type]
    except KeyError:
        raise ValueError(f"face_type must be one of {', '.join(_TO_DFL_FACE_TYPE)}, got {face_type!r}") from None


# ------------------------------------------------------------------------------ the import job


@dataclasses.dataclass
class ImportSummary:
    """What ``dflray import-dfl`` did."""

    out: str
    faces: int = 0
    errors: int = 0
    with_xseg_labels: int = 0
    skipped: bool = False
    face_types: dict[str, int] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        if self.skipped:
            return f"import-dfl → {self.out}: already imported (nothing done)"
        types = ", ".join(f"{k} {v}" for k, v in sorted(self.face_types.items())) or "none"
        return (f"import-dfl → {self.out}: {self.faces} faces ({types}), {self.with_xseg_labels} with XSeg labels, "
                f"{self.errors} files not imported (see errors/)")


def run_import_dfl(folder: str, out: str, chunk: int = 500) -> ImportSummary:
    """Imports a DeepFaceLab ``aligned`` folder into a Parquet faceset at ``out``.

    The folder becomes one "video" of the faceset (``uri`` = the folder, ``frame_index`` = the file's
    position in name order). Faces are written in chunks of ``chunk`` rows (memory stays bounded), then
    the errors, then the ``videos`` row that commits them, then ``faceset.json``; a rerun on a committed
    import does nothing. A file that cannot be read (not a JPEG, no DFL metadata, a forbidden pickle)
    becomes a row of ``errors/`` and the others are imported.

    Raises:
        ValueError: when ``folder`` holds no JPEG at all.
    """
    import time

    from dflray.faceset import Commit, read_videos, video_id
    from dflray.io import schema
    from dflray.io.storage import atomic_write, exists, join, makedirs, remove

    summary = ImportSummary(out=out)
    vid = video_id(folder.rstrip("/"))
    if exists(join(out, "videos")) and vid in set(read_videos(out).column("video_id").to_pylist()):
        summary.skipped = True
        return summary
    makedirs(out)
    # Faces go straight to faces/RUN_ID-*.parquet: until the videos record lands they belong to an
    # unrecorded run, which readers skip and the next extraction's recovery deletes.
    commit = Commit(out)
    run_id = commit.run_id
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    written: list[str] = []
    sizes: dict[int, int] = {}
    total = 0

    def flush() -> None:
        if rows:
            rel = f"faces/{run_id}-{len(written):05d}.parquet"
            commit.write("faces", rows, rel)
            written.append(join(out, rel))
            rows.clear()

    for i, (uri, face, error) in enumerate(iter_aligned(folder)):
        total += 1
        if face is None:
            errors.append({"uri": uri, "video_id": vid, "frame_index": i, "stage": "import", "type": error.split(":", 1)[0],
                           "message": error, "run_id": run_id})
            continue
        row = face_row(face, video_id=vid, frame_index=i, source_uri=uri)
        row["run_id"] = run_id
        rows.append(row)
        summary.faces += 1
        summary.face_types[row["face_type"]] = summary.face_types.get(row["face_type"], 0) + 1
        sizes[int(row["size"])] = sizes.get(int(row["size"]), 0) + 1
        summary.with_xseg_labels += row.get("xseg_label") is not None
        if len(rows) >= chunk:
            flush()
    if total == 0:
        for u in written:
            remove(u)
        raise ValueError(f"ALIGNED_DIR: no .jpg files in {folder}")
    flush()
    summary.errors = len(errors)
    commit.write("errors", errors, f"errors/{run_id}.parquet")
    status = "ok" if summary.faces else "error"
    video = {"video_id": vid, "uri": folder, "frame_count": total, "frames_decoded": total, "faces": summary.faces,
             "frames_with_faces": summary.faces, "status": status, "run_id": run_id,
             "error": None if summary.faces else "no DFL face could be read"}
    commit.record("videos", [video], f"videos/{run_id}.parquet")
    face_type = max(summary.face_types, key=summary.face_types.get) if summary.face_types else None
    size = max(sizes, key=sizes.get) if sizes else None
    doc = {"kind": "dflray.faceset", "schema_version": schema.SCHEMA_VERSION, "imported_from": folder,
           "importer": "dflray import-dfl (DeepFaceLab aligned JPEGs)",
           "config": {"align": {"face_type": face_type, "size": size}, "decode": {"every_n": 1}},
           "tables": ["errors", "faces", "videos"], "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_write(join(out, "faceset.json")) as f:
        f.write(json.dumps(doc, indent=2).encode())
    return summary
