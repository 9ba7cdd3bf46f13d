"""DeepFaceLab's aligned-face JPEGs: the metadata segment, read and written safely.

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
    >>> meta = read_dfl_metadata(open("aligned/00001_0.jpg", "rb").read())  # doctest: +SKIP
    >>> sorted(meta)[:3]  # doctest: +SKIP
    ['eyebrows_expand_mod', 'face_type', 'image_to_face_mat']
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from dflray.extract.stages import encode_image

__all__ = ["DFL_FACE_TYPES", "MAX_FILE_BYTES", "MAX_SIDE", "DflMetadataError", "read_dfl_metadata", "write_dfl_jpeg"]

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
