"""Reading DeepFaceLab aligned facesets (``aligned/*.jpg``) safely, for ``dflray import-dfl``.

DeepFaceLab keeps each aligned face as a plain JPEG with its metadata hidden in the file: one APP15
segment (marker ``FF EF``) whose payload is ``pickle.dumps`` of a dict. DFL writes that segment right
after the file's last APPn segment (after JFIF's APP0, before the quantisation tables), so a reader
only has to walk the header segments up to start-of-scan. One segment carries at most 65,533 bytes,
which is why DFL re-encodes large XSeg masks as JPEG to stay under 50,000 bytes. The dict keys that
matter here (DFLIMG/DFLJPG.py, mainscripts/Extractor.py, core/imagelib/SegIEPolys.py,
facelib/FaceType.py in iperov/DeepFaceLab):

- ``face_type``: DFL's name (``half_face``, ``midfull_face``, ``full_face``, ``whole_face``,
  ``head``; also ``full_face_no_align``, ``head_no_align`` and ``mark_only``, which have no
  alignment and are refused here). Missing means ``full_face``, as DFL reads it.
- ``landmarks``: 68 (x, y) points in aligned-image pixels (a nested list of floats).
- ``source_filename``, ``source_rect`` (the detector box l, t, r, b in the source frame, a numpy int
  array), ``source_landmarks`` (68 points in source-frame pixels), ``image_to_face_mat`` (2×3 numpy
  float array mapping source-frame pixels to aligned pixels; DFL's faceset resizer rescales it).
- ``eyebrows_expand_mod``: how far the hull mask lifts the brows (default 1.0).
- ``seg_ie_polys``: the XSeg editor's polygons, ``{"polys": [{"type": 1|0, "pts": float32 N×2}]}``
  (1 include, 0 exclude), or the older list of ``(type, pts)`` pairs; points are aligned-image
  pixels. When DFL loads them it sorts them: every include polygon first, then every exclude
  polygon, each group in its saved order; the label is include polygons filled and exclude polygons
  cleared in that order, with points truncated to integers.
- ``xseg_mask``: the mask a trained XSeg model applied, as a numpy uint8 array of encoded image bytes
  (PNG, or JPEG when the PNG is over 50,000 bytes), single channel, at the XSeg model's resolution
  (usually 256), not the image's. DFL's trainer prefers the polygons when a face has both.

Security: the metadata is untrusted input. It is unpickled by ``_RestrictedUnpickler``, whose
``find_class`` admits a handful of names only, each mapped to a guarded stand-in (numpy's dtype
constructor, array reconstruction and scalar functions, under both ``numpy.core`` and ``numpy._core``;
``_codecs.encode`` for Latin-1 only). Every other global (``os.system``, ``builtins.eval``,
``numpy.load``, any class) is refused by name before anything is called. Dtypes are rebuilt from
their string form and must be plain numbers, booleans or strings: object, structured and zero-size
dtypes are refused, since an object array would hold arbitrary unpickled objects. The payload is
bounded by the JPEG segment size, the file by ``MAX_FILE_BYTES``, and the unpickled tree is walked
with depth and node budgets into plain Python containers and fresh ndarrays.

Example:
    >>> for uri, face, error in iter_aligned("workspace/data_src/aligned"):  # doctest: +SKIP
    ...     row = face_row(face, video_id="dfl", frame_index=i, source_uri=uri) if face else None
"""

from __future__ import annotations

import io
import json
import math
import pickle
import posixpath
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import cv2
import numpy as np

from dflray.extract.stages import encode_image
from dflray.face.align import transform_points
from dflray.face.masks import hull_mask
from dflray.face.pose import estimate_pitch_yaw_roll
from dflray.face.quality import blur_score
from dflray.io.storage import list_files, open_uri

__all__ = ["DFL_FACE_TYPES", "MAX_FILE_BYTES", "DflFace", "DflMetadataError", "dfl_face_type", "face_row",
           "iter_aligned", "parse_dfl_face", "polys_to_mask", "read_dfl_metadata", "write_dfl_jpeg", "xseg_label"]

# DFL face type name -> dflray FACE_TYPES name (DFL's other types have no alignment).
DFL_FACE_TYPES = {"half_face": "half", "midfull_face": "mid_full", "full_face": "full",
                  "whole_face": "whole_face", "head": "head"}
_TO_DFL_FACE_TYPE = {v: k for k, v in DFL_FACE_TYPES.items()}

MAX_FILE_BYTES = 32 << 20  # an aligned face is a few hundred KB; refuse anything absurd before parsing
MAX_SIDE = 8192  # largest aligned image (and decoded XSeg mask) side accepted
_MAX_SEGMENT_PAYLOAD = 0xFFFF - 2  # a JPEG segment length is 16 bits and counts its own two bytes
_MAX_DEPTH = 32  # nesting of the unpickled tree (DFL's is 4 deep)
_GEOMETRY_TOLERANCE = 0.02  # source → aligned landmark disagreement, in image sides, still trusted
_MAX_NODES = 100_000  # values visited copying the tree out; one 65 KB segment holds fewer unshared ones

_APP15 = 0xEF
_SOS = 0xDA
_EOI = b"\xff\xd9"
_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI: markers without a length field
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SUFFIXES = (".jpg", ".jpeg")


class DflMetadataError(ValueError):
    """A file is not a readable DFL aligned face: not a JPEG, no or bad DFL metadata, refused pickle."""


# ------------------------------------------------------------------------------------------------
# JPEG segments


@dataclass(frozen=True)
class _Segment:
    marker: int  # second marker byte, e.g. 0xEF for APP15
    start: int  # offset of the FF byte
    end: int  # offset just past the segment
    payload: bytes


def _header_segments(data: bytes) -> tuple[list[_Segment], int]:
    """The segments before start-of-scan, and the offset of the SOS segment.

    Raises:
        DflMetadataError: If ``data`` does not start with a JPEG SOI or a segment runs past the end.
    """
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise DflMetadataError("not a JPEG file (no start-of-image marker)")
    segments: list[_Segment] = []
    pos = 2
    while True:
        if pos + 2 > len(data):
            raise DflMetadataError("truncated JPEG: header ends before start-of-scan")
        if data[pos] != 0xFF:
            raise DflMetadataError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise DflMetadataError("corrupt JPEG: end-of-image before start-of-scan")
        if pos + 4 > len(data):
            raise DflMetadataError("truncated JPEG: header ends inside a segment")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise DflMetadataError(f"truncated JPEG: segment FF{marker:02X} at byte {pos} runs past the end")
        if marker == _SOS:
            return segments, pos
        segments.append(_Segment(marker, pos, end, data[pos + 4:end]))
        pos = end


def _jpeg_size(segments: list[_Segment]) -> tuple[int, int]:
    """(height, width) from the frame header."""
    for s in segments:
        if s.marker in _SOF and len(s.payload) >= 5:
            return int.from_bytes(s.payload[1:3], "big"), int.from_bytes(s.payload[3:5], "big")
    raise DflMetadataError("corrupt JPEG: no frame header (SOF)")


def _image_size(buf: bytes) -> tuple[int, int]:
    """(height, width) of PNG or JPEG bytes, read from the header without decoding."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return int.from_bytes(buf[20:24], "big"), int.from_bytes(buf[16:20], "big")
    if buf[:2] == b"\xff\xd8":
        return _jpeg_size(_header_segments(buf)[0])
    raise DflMetadataError("xseg_mask is neither PNG nor JPEG data")


# ------------------------------------------------------------------------------------------------
# the restricted unpickler


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` accepts it; not callable."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<numpy.ndarray token>"


_NDARRAY = _NdarrayToken()


def _clean_dtype(d: Any) -> np.dtype:
    """A fresh dtype equal to ``d`` if ``d`` is a plain number, bool or string dtype; else refuse.

    A pickled dtype is built, then mutated by its ``__setstate__`` (which can add object fields), so
    the check is made where the dtype is used and the result is rebuilt from its string form.
    """
    if not isinstance(d, np.dtype):
        raise DflMetadataError(f"expected a numpy dtype in DFL metadata, got {type(d).__name__}")
    if d.hasobject or d.fields is not None or d.subdtype is not None or d.kind not in "biufcSU" \
            or d.itemsize == 0:
        raise DflMetadataError(f"forbidden numpy dtype {d} in DFL metadata (only plain numbers and strings)")
    return np.dtype(d.str)


def _checked_shape(shape: Any, dtype: np.dtype, nbytes: int) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 8:
        raise DflMetadataError(f"bad numpy array shape {shape!r} in DFL metadata")
    if math.prod(shape) * dtype.itemsize != nbytes:
        raise DflMetadataError(f"numpy array data of {nbytes} bytes does not fit shape {shape} of {dtype}")
    return shape


class _GuardedArray(np.ndarray):
    """What ``_reconstruct`` returns: an ndarray whose ``__setstate__`` checks the pickled state."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DflMetadataError("bad numpy array state in DFL metadata")
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        dtype = _clean_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray)):  # object arrays pickle a list here
            raise DflMetadataError("numpy array in DFL metadata has no raw data (object array?)")
        shape = _checked_shape(shape, dtype, len(raw))
        super().__setstate__((version, shape, dtype, bool(fortran), bytes(raw)))


def _dtype(spec: Any, align: Any = False, copy: Any = True, *rest: Any) -> np.dtype:
    """Guarded ``numpy.dtype``: a string spec only, always a private copy (its state is set next)."""
    if not isinstance(spec, str) or rest:
        raise DflMetadataError("numpy.dtype in DFL metadata must be built from a type string")
    try:
        d = np.dtype(spec, bool(align), True)
    except TypeError as e:
        raise DflMetadataError(f"bad numpy dtype {spec!r} in DFL metadata") from e
    _clean_dtype(d)
    return d


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _GuardedArray:
    """Guarded ``numpy.core.multiarray._reconstruct``: an empty plain array whose state comes next."""
    if subtype is not _NDARRAY:
        raise DflMetadataError("numpy _reconstruct in DFL metadata must build a numpy.ndarray")
    return np.ndarray.__new__(_GuardedArray, (0,), np.uint8)


def _scalar(dtype: Any, raw: Any = None) -> np.generic:
    """Guarded ``numpy.core.multiarray.scalar``: a number from its raw bytes (never an object)."""
    dtype = _clean_dtype(dtype)
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise DflMetadataError(f"bad numpy scalar data for {dtype} in DFL metadata")
    return np.frombuffer(raw, dtype)[0]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Guarded ``numpy.core.numeric._frombuffer`` (pickle protocol 5 with in-band buffers)."""
    dtype = _clean_dtype(dtype)
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
        raise DflMetadataError("bad numpy buffer in DFL metadata")
    shape = _checked_shape(shape, dtype, len(buf))
    return np.frombuffer(bytes(buf), dtype).reshape(shape, order=order)


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    """Guarded ``_codecs.encode``: protocol-2 pickles store bytes as ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DflMetadataError("_codecs.encode in DFL metadata is only allowed for latin1 text")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): _NDARRAY,
    ("_codecs", "encode"): _latin1,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings and plain numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DflMetadataError(f"forbidden global {module}.{name} in DFL metadata pickle") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DflMetadataError("persistent ids are not allowed in DFL metadata pickle")


def _plain(obj: Any, depth: int, budget: list[int]) -> Any:
    """A copy of the unpickled tree made of plain Python values and fresh, plain ndarrays."""
    budget[0] -= 1
    if budget[0] < 0:
        raise DflMetadataError("DFL metadata has too many values")
    if depth > _MAX_DEPTH:
        raise DflMetadataError("DFL metadata is nested too deeply")
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return obj
    if type(obj) is bytearray:
        return bytes(obj)
    if isinstance(obj, np.ndarray):
        return np.array(obj.view(np.ndarray), dtype=_clean_dtype(obj.dtype), copy=True)
    if isinstance(obj, np.generic):
        return np.array(obj, dtype=_clean_dtype(obj.dtype)).item()
    if type(obj) in (list, tuple):
        items = [_plain(v, depth + 1, budget) for v in obj]
        return items if type(obj) is list else tuple(items)
    if type(obj) is dict:
        out = {}
        for k, v in obj.items():
            if type(k) not in (str, int, bytes):
                raise DflMetadataError(f"DFL metadata has a {type(k).__name__} key")
            out[k] = _plain(v, depth + 1, budget)
        return out
    raise DflMetadataError(f"unexpected {type(obj).__name__} in DFL metadata")


def _safe_loads(payload: bytes) -> Any:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except DflMetadataError:
        raise
    except Exception as e:  # any failure to parse untrusted bytes is the file's fault, never ours
        raise DflMetadataError(f"malformed DFL metadata pickle ({type(e).__name__}: {e})") from e
    return _plain(obj, 0, [_MAX_NODES])


# ------------------------------------------------------------------------------------------------
# reading and writing DFL JPEGs


def read_dfl_metadata(data: bytes) -> dict:
    """The metadata dict DeepFaceLab embedded in one aligned JPEG, unpickled safely.

    Args:
        data: the file's bytes.

    Returns:
        The dict with plain Python values and numpy arrays (numpy scalars become Python numbers).

    Raises:
        DflMetadataError: If the data is too large, not a JPEG, has no (or several) APP15 segments,
            or the pickle is malformed, names a forbidden global or holds a non-plain value.

    Example:
        >>> meta = read_dfl_metadata(open("aligned/00001_0.jpg", "rb").read())  # doctest: +SKIP
        >>> meta["face_type"], len(meta["landmarks"])  # doctest: +SKIP
        ('whole_face', 68)
    """
    if len(data) > MAX_FILE_BYTES:
        raise DflMetadataError(f"file too large ({len(data)} bytes > {MAX_FILE_BYTES})")
    segments, _ = _header_segments(bytes(data))
    app15 = [s for s in segments if s.marker == _APP15]
    if not app15:
        raise DflMetadataError("no DFL metadata (APP15 segment) in this JPEG")
    if len(app15) > 1:
        raise DflMetadataError(f"{len(app15)} APP15 segments; a DFL file has exactly one")
    meta = _safe_loads(app15[0].payload)
    if not isinstance(meta, dict):
        raise DflMetadataError(f"DFL metadata is a {type(meta).__name__}, not a dict")
    return meta


def write_dfl_jpeg(rgb: np.ndarray, meta: dict, quality: int = 95, *, protocol: int = 3) -> bytes:
    """Encodes an image as a DFL aligned JPEG carrying ``meta`` in an APP15 pickle segment.

    The segment goes right after the last APPn segment, where DFL puts it; keys whose value is None
    are dropped, as DFL does. Only plain containers, numbers, strings and numpy arrays of numbers can
    be read back; the result is checked with ``read_dfl_metadata`` before it is returned.

    Args:
        rgb: H×W×3 uint8 RGB image.
        meta: DFL's dict, e.g. ``{"face_type": "whole_face", "landmarks": lm.tolist(), ...}``.
        quality: JPEG quality, 1-100.
        protocol: pickle protocol (DFL ran on Python 3.6/3.7, whose default was 3).

    Returns:
        The JPEG file's bytes.

    Raises:
        DflMetadataError: If the pickled metadata exceeds one JPEG segment or does not read back.
        ValueError: If the image cannot be encoded.

    Example:
        >>> data = write_dfl_jpeg(crop, {"face_type": "full_face", "landmarks": lm.tolist()})  # doctest: +SKIP
    """
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    jpeg = encode_image(np.asarray(rgb), "jpg", quality)
    payload = pickle.dumps({k: v for k, v in meta.items() if v is not None}, protocol=protocol)
    if len(payload) > _MAX_SEGMENT_PAYLOAD:
        raise DflMetadataError(f"DFL metadata too large for one JPEG segment ({len(payload)} bytes > "
                               f"{_MAX_SEGMENT_PAYLOAD})")
    segments, sos = _header_segments(jpeg)
    parts = [jpeg[s.start:s.end] for s in segments if s.marker != _APP15]
    apps = [i for i, s in enumerate(s for s in segments if s.marker != _APP15) if 0xE0 <= s.marker <= 0xEF]
    at = apps[-1] + 1 if apps else 0
    parts.insert(at, b"\xff\xef" + (len(payload) + 2).to_bytes(2, "big") + payload)
    out = jpeg[:2] + b"".join(parts) + jpeg[sos:]
    read_dfl_metadata(out)
    return out


def _strip_app15(data: bytes, segments: list[_Segment]) -> bytes:
    """The JPEG without DFL's pickle segment (the image data is untouched, not re-encoded)."""
    out, pos = [], 0
    for s in segments:
        if s.marker == _APP15:
            out.append(data[pos:s.start])
            pos = s.end
    out.append(data[pos:])
    return b"".join(out)


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
    import uuid

    import pyarrow.parquet as pq

    from dflray.faceset import read_videos
    from dflray.extract.pipeline import video_id as make_video_id
    from dflray.io import schema
    from dflray.io.storage import atomic_write, exists, join, makedirs, remove

    summary = ImportSummary(out=out)
    vid = make_video_id(folder.rstrip("/"))
    if exists(join(out, "videos")) and vid in set(read_videos(out).column("video_id").to_pylist()):
        summary.skipped = True
        return summary
    makedirs(out)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:8]
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    written: list[str] = []
    sizes: dict[int, int] = {}
    total = 0

    def flush() -> None:
        if rows:
            uri = join(out, "faces", f"{run_id}-{len(written):05d}.parquet")
            with atomic_write(uri) as f:
                pq.write_table(schema.table_from_rows("faces", rows), f)
            written.append(uri)
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
    with atomic_write(join(out, "errors", f"{run_id}.parquet")) as f:
        pq.write_table(schema.table_from_rows("errors", errors), f)
    status = "ok" if summary.faces else "error"
    video = {"video_id": vid, "uri": folder, "frame_count": total, "frames_decoded": total, "faces": summary.faces,
             "frames_with_faces": summary.faces, "status": status, "run_id": run_id,
             "error": None if summary.faces else "no DFL face could be read"}
    with atomic_write(join(out, "videos", f"{run_id}.parquet")) as f:
        pq.write_table(schema.table_from_rows("videos", [video]), f)
    face_type = max(summary.face_types, key=summary.face_types.get) if summary.face_types else None
    size = max(sizes, key=sizes.get) if sizes else None
    doc = {"kind": "dflray.faceset", "schema_version": schema.SCHEMA_VERSION, "imported_from": folder,
           "importer": "dflray import-dfl (DeepFaceLab aligned JPEGs)",
           "config": {"align": {"face_type": face_type, "size": size}, "decode": {"every_n": 1}},
           "tables": ["errors", "faces", "videos"], "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_write(join(out, "faceset.json")) as f:
        f.write(json.dumps(doc, indent=2).encode())
    return summary
