"""Video decode and encode with PyAV, streaming: a frame at a time, never a whole video in memory.

Frames are RGB uint8 arrays, already turned upright according to the stream's rotation metadata
(the display matrix), so a phone video recorded in portrait comes out portrait.

Frame numbering, the one rule every reader here follows (``decode_frames``/``decode_range``,
``Transcoder.frames``, ``read_masks``): a frame's index is its position in presentation order from the
start of the stream, i.e. the rank of its pts among the pts of the stream's packets. That holds for
constant and variable frame rates alike (an index computed as timestamp × average fps does not: on a
variable-frame-rate video two frames can round to one number and others to none). A frame's timestamp
is its presentation time in seconds from the stream's start. A stream without pts is numbered in
decode-output order.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from dflray.io.storage import describe_error, fingerprint, fs_and_path, open_uri, protocol


class VideoError(RuntimeError):
    """A video cannot be opened or decoded; the message says why, in words a user can act on."""


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video (sizes are after rotation)."""

    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int
    duration: float
    codec: str
    has_audio: bool
    frame_count_exact: bool


@contextlib.contextmanager
def open_container(uri: str):
    """Opens a video URI with PyAV (local paths directly, other URLs through fsspec)."""
    fileobj = None
    try:
        if protocol(uri) in ("file", "local"):
            target = fs_and_path(uri)[1]
        else:
            fileobj = open_uri(uri, "rb")
            target = fileobj
        try:
            container = av.open(target, "r")
        except FileNotFoundError as e:
            raise VideoError(f"not found: {uri}") from e
        except av.error.InvalidDataError as e:
            raise VideoError(f"not a readable video (invalid data): {e}") from e
        except av.FFmpegError as e:
            raise VideoError(f"cannot open video: {e}") from e
        try:
            yield container
        finally:
            container.close()
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise VideoError(f"cannot read {uri}: {describe_error(e)}") from e
    finally:
        if fileobj is not None:
            fileobj.close()


def _video_stream(container, uri: str):
    if not container.streams.video:
        raise VideoError(f"no video stream in {uri}")
    return container.streams.video[0]


def _rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _upright(frame: av.VideoFrame) -> np.ndarray:
    img = frame.to_ndarray(format="rgb24")
    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    # The display matrix angle is counter-clockwise; np.rot90 also turns counter-clockwise.
    return np.ascontiguousarray(np.rot90(img, k=rot // 90)) if rot else img


def probe(uri: str) -> VideoInfo:
    """Reads a video's metadata and decodes its first frame (to learn rotation and prove it decodes).

    A container without a frame count has its packets counted (``frame_times``: a demux, no decoding).

    Raises:
        VideoError: when the file is missing, empty, not a video, or has no decodable frame.

    Example:
        >>> info = probe("clip.mp4")  # doctest: +SKIP
        >>> info.fps, info.frame_count, (info.width, info.height)  # doctest: +SKIP
    """
    fs, path = fs_and_path(uri)
    try:
        if fs.isfile(path) and fs.size(path) == 0:
            raise VideoError(f"empty file (0 bytes): {uri}")
    except (OSError, PermissionError) as e:
        raise VideoError(f"cannot read {uri}: {describe_error(e)}") from e
    with open_container(uri) as c:
        s = _video_stream(c, uri)
        fps = _rate(s)
        try:
            first = next(c.decode(s))
        except StopIteration:
            raise VideoError("video stream has no decodable frames") from None
        except av.FFmpegError as e:
            raise VideoError(f"first frame does not decode: {e}") from e
        rot = int(round(getattr(first, "rotation", 0) or 0)) % 360
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w
        if s.duration is not None and s.time_base:
            duration = float(s.duration * s.time_base)
        elif c.duration:
            duration = c.duration / av.time_base
        else:
            duration = 0.0
        exact = bool(s.frames)
        count = int(s.frames) if s.frames else int(round(duration * fps))
        if fps <= 0:
            raise VideoError("video stream has no frame rate")
        codec, has_audio = s.codec_context.name, bool(c.streams.audio)
    if not exact:
        # No count in the container (Matroska, WebM, MPEG-TS): count the packets, as duration × average
        # fps is wrong for a variable frame rate (a stream without timestamps keeps the estimate).
        times = frame_times(uri)
        if times.complete and len(times.pts):
            count, exact = len(times.pts), True
    return VideoInfo(fps=fps, frame_count=count, width=w, height=h, rotation=rot, duration=duration or count / fps,
                     codec=codec, has_audio=has_audio, frame_count_exact=exact)


def frame_ranges(frame_count: int, segment_frames: int, max_frames: int | None = None) -> list[tuple[int, int | None]]:
    """Splits ``[0, frame_count)`` into ranges of ``segment_frames``; the last range is open-ended
    (None), so frames beyond a wrong metadata count are still decoded.

    Example:
        >>> frame_ranges(700, 300)
        [(0, 300), (300, 600), (600, None)]
    """
    n = min(frame_count, max_frames) if max_frames else frame_count
    if n <= 0:
        return [(0, max_frames)]
    starts = list(range(0, n, segment_frames))
    ends: list[int | None] = starts[1:] + [max_frames]
    return list(zip(starts, ends))


@dataclass
class SourceFrame:
    """A decoded frame: its index (position in presentation order), pts (stream time base, or None),
    time (seconds from the stream's start) and upright RGB pixels."""

    index: int
    pts: int | None
    time: float
    rgb: np.ndarray


class _Numbering:
    """Numbers decoded frames by presentation order as they come out of the decoder.

    Every video packet's pts is pushed as it is demuxed; a frame with pts ``p`` gets ``base`` plus the
    number of pushed pts in ``[lo, p)``. A decoder emits frames in presentation order and has been fed
    every packet shown before the frame it emits, so this is the rank of ``p`` among the stream's pts
    from ``lo`` on, B-frames or not, and a packet that fails to decode still takes its number. Frames
    without pts (and repeated pts) take the number after the previous frame.
    """

    def __init__(self, base: int = 0, lo: int | None = None):
        self._heap: list[int] = []
        self._count = base
        self._lo = lo
        self._last = base - 1

    def packet(self, packet) -> None:
        pts = _packet_pts(packet)
        if pts is not None and (self._lo is None or pts >= self._lo):
            heapq.heappush(self._heap, pts)

    def frame(self, pts: int | None) -> int:
        heap = self._heap
        if pts is not None:
            while heap and heap[0] < pts:
                heapq.heappop(heap)
                self._count += 1
        idx = max(self._count, self._last + 1)
        if pts is not None and heap and heap[0] == pts:
            heapq.heappop(heap)
            self._count += 1
        self._last = idx
        return idx


def _packet_pts(packet) -> int | None:
    """The pts a packet contributes to frame numbering: None for the flush packet and for packets the
    demuxer marks to be decoded but not shown (outside an edit list)."""
    if packet.size == 0 or packet.is_discard:
        return None
    return packet.pts


@dataclass(frozen=True)
class FrameTimes:
    """The presentation timestamps of a video stream's frames, found by demuxing (no decoding).

    Attributes:
        pts: sorted pts (stream time base): ``pts[i]`` is frame ``i``'s.
        complete: every packet had a pts; if not, frames are numbered in decode order and ``pts``
            cannot place a segment's start.
        time_base: the stream's time base.
        start: the stream's start time (pts of its first frame; 0 if unknown), in ``time_base``.
    """

    pts: np.ndarray
    complete: bool
    time_base: Fraction | None
    start: int

    def seconds(self, index: int) -> float:
        """Frame ``index``'s presentation time in seconds from the stream's start."""
        return float((int(self.pts[index]) - self.start) * self.time_base)


_TIMES_CACHE: OrderedDict[tuple, FrameTimes] = OrderedDict()
_TIMES_LOCK = threading.Lock()
_TIMES_CACHE_SIZE = 16


def _file_key(uri: str) -> tuple | None:
    """``uri`` with its ``fingerprint`` (a rewritten file is scanned again), or None."""
    try:
        return (uri, fingerprint(uri))
    except Exception:  # no stat for this URL: scan without caching
        return None


def _scan_times(c, s) -> FrameTimes:
    pts: list[int] = []
    complete = True
    try:
        for packet in c.demux(s):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None:
                complete = False
            else:
                pts.append(packet.pts)
    except av.FFmpegError:
        pass  # a stream that breaks: the frames before the break keep their numbers; decoding reports it
    return FrameTimes(np.sort(np.asarray(pts, np.int64)), complete, s.time_base, _start(s))


def frame_times(uri: str) -> FrameTimes:
    """The presentation timestamps of every frame of ``uri``'s video stream, by demuxing it once
    (reading the file, decoding nothing); kept per process for the last few videos, so the segments of
    one video that a worker decodes scan it once.

    Raises:
        VideoError: when the video cannot be opened.

    Example:
        >>> t = frame_times("clip.mp4")  # doctest: +SKIP
        >>> len(t.pts), t.seconds(10)  # doctest: +SKIP
    """
    key = _file_key(uri)
    with _TIMES_LOCK:
        if key is not None and key in _TIMES_CACHE:
            _TIMES_CACHE.move_to_end(key)
            return _TIMES_CACHE[key]
    with open_container(uri) as c:
        times = _scan_times(c, _video_stream(c, uri))
    if key is not None:
        with _TIMES_LOCK:
            _TIMES_CACHE[key] = times
            while len(_TIMES_CACHE) > _TIMES_CACHE_SIZE:
                _TIMES_CACHE.popitem(last=False)
    return times


def _start(s) -> int:
    """The stream's start time in its time base: timestamps are counted from it."""
    return s.start_time or 0


def _seconds(pts: int | None, t0: int, tb, index: int, fps: float) -> float:
    if pts is not None and tb:
        return float((pts - t0) * tb)
    return index / fps if fps > 0 else 0.0


def _packets_from(c, s, lo: int, t0: int):
    """Demuxes ``s`` from a keyframe shown at or before pts ``lo``.

    Demuxers seek by decode timestamps, and some land on a non-keyframe (MPEG-TS): packets before the
    first keyframe are dropped, and a keyframe shown after ``lo`` means seeking again, twice as far back
    each time, and at last to the stream's first packet.
    """
    second = int(1 / s.time_base) if s.time_base else 1
    target, back = lo, second
    while target >= t0 - second:
        c.seek(target, stream=s, backward=True, any_frame=False)
        packets = c.demux(s)
        first = next((p for p in packets if p.size and p.is_keyframe), None)
        if first is not None and (first.pts is None or first.pts <= lo):
            return _chain(first, packets)
        target, back = lo - back, back * 2
    c.seek(t0 - (1 << 40), stream=s, backward=True, any_frame=False)  # before any timestamp: the first packet
    return c.demux(s)


def _chain(first, rest):
    yield first
    yield from rest


def decode_frames(uri: str, start: int = 0, end: int | None = None, every_n: int = 1, threads: int = 1, *,
                  start_pts: int | None = None) -> Iterator[SourceFrame]:
    """Yields the frames ``start <= index < end`` with ``index % every_n == 0``, in order, as
    ``SourceFrame`` (index, pts, timestamp in seconds from the stream's start, upright RGB).

    Indices are positions in presentation order (see the module's docstring), so workers that decode
    different ranges of one video after seeking agree with each other and with a decode from the start.
    A range that starts after frame 0 needs the pts of its first frame: ``start_pts`` when the caller
    knows it (from ``frame_times``), else this reads ``frame_times(uri)`` (a demux of the file, kept per
    process). Decoding starts at the keyframe before ``start``.

    Raises:
        VideoError: when the video cannot be opened or breaks mid-stream (frames before the break
            have already been yielded).
    """
    if end is not None and end <= start:
        return
    lo = None
    if start > 0 and start_pts is None:
        times = frame_times(uri)
        if times.complete:
            if start >= len(times.pts):
                return
            start_pts = int(times.pts[start])
    if start > 0 and start_pts is not None:
        lo = start_pts
    with open_container(uri) as c:
        s = _video_stream(c, uri)
        s.thread_type = "AUTO" if threads != 1 else "SLICE"
        if threads:
            s.codec_context.thread_count = threads
        fps = _rate(s)
        tb = s.time_base
        t0 = _start(s)
        # Without a start pts (a stream without timestamps) a range is found by decoding from the start.
        numbering = _Numbering(start, lo) if lo is not None else _Numbering()
        seq, started = -1, lo is None
        try:
            for packet in _packets_from(c, s, lo, t0) if lo is not None else c.demux(s):
                numbering.packet(packet)
                for frame in packet.decode():
                    seq += 1
                    pts = frame.pts
                    if not started:  # frames from the keyframe up to the range's first
                        if pts is None or pts < lo:
                            continue
                        started = True
                    idx = numbering.frame(pts)
                    if idx < start:
                        continue
                    if end is not None and idx >= end:
                        return
                    if idx % every_n:
                        continue
                    yield SourceFrame(idx, pts, _seconds(pts, t0, tb, idx, fps), _upright(frame))
        except av.FFmpegError as e:
            raise VideoError(f"decode failed near frame {seq}: {e}") from e


def decode_range(uri: str, start: int = 0, end: int | None = None, every_n: int = 1,
                 threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(frame_index, rgb_frame)`` for frames ``start <= index < end`` with ``index % every_n == 0``
    (``decode_frames`` without the timestamps).

    Raises:
        VideoError: when the video cannot be opened or breaks mid-stream (frames before the break
            have already been yielded).
    """
    for f in decode_frames(uri, start, end, every_n, threads):
        yield f.index, f.rgb


class VideoWriter:
    """Encodes RGB frames to H.264 (or another codec) with PyAV, frame by frame.

    Example:
        >>> with VideoWriter("out.mp4", fps=25, size=(640, 480)) as w:  # doctest: +SKIP
        ...     w.write(np.zeros((480, 640, 3), np.uint8))
    """

    def __init__(self, uri: str, fps: float, size: tuple[int, int], codec: str = "libx264",
                 crf: int = 20, pix_fmt: str = "yuv420p", metadata: dict[str, str] | None = None):
        self._file = open_uri(uri, "wb") if protocol(uri) not in ("file", "local") else None
        target = self._file if self._file is not None else fs_and_path(uri)[1]
        self._c = av.open(target, "w", format="mp4" if self._file is not None else None)
        for k, v in (metadata or {}).items():
            self._c.metadata[k] = v
        rate = Fraction(fps).limit_denominator(1001)
        self._s = self._c.add_stream(codec, rate=rate)
        self._s.width, self._s.height = size
        self._s.pix_fmt = pix_fmt
        if codec == "libx264":
            self._s.options = {"crf": str(crf), "preset": "medium"}

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._s.encode(frame):
            self._c.mux(packet)

    def close(self) -> None:
        for packet in self._s.encode():
            self._c.mux(packet)
        self._c.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _luma_frame(mask: np.ndarray) -> av.VideoFrame:
    """A full-range yuv420p frame whose luma is ``mask`` exactly (chroma neutral)."""
    h, w = mask.shape
    planes = np.full((h * 3 // 2, w), 128, np.uint8)
    planes[:h] = mask
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    frame.color_range = 2
    return frame


def read_masks(uri: str) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(frame_index, mask)`` of a manipulation mask video (the luma plane, uint8 0..255), numbered
    as ``decode_frames`` numbers frames (the mask video has the frames' own timestamps)."""
    with open_container(uri) as c:
        s = _video_stream(c, uri)
        numbering = _Numbering()
        for packet in c.demux(s):
            numbering.packet(packet)
            for frame in packet.decode():
                y = frame.to_ndarray(format="yuv420p")[:frame.height]
                yield numbering.frame(frame.pts), np.ascontiguousarray(y)


class Transcoder:
    """Re-encodes a video frame by frame, keeping its timestamps and copying its audio through.

    Iterate ``frames()`` for the input's upright RGB frames, in order; hand each (possibly changed)
    back with ``write(frame, rgb, mask)`` in the same order. Audio packets are copied to the output
    as the input is demuxed (no re-encode), and every output frame keeps its input frame's
    presentation timestamp, so frame count, fps, timestamps and audio sync are the input's. An
    optional second output gets a grey mask per frame (the manipulation mask video).

    Outputs are local files (upload them afterwards); the container carries ``metadata``
    (arbitrary keys are stored as MP4 user-data tags).

    Example:
        >>> with Transcoder("in.mp4", "/tmp/out.mp4", mask_path="/tmp/mask.mp4") as t:  # doctest: +SKIP
        ...     for f in t.frames():
        ...         t.write(f, f.rgb, np.zeros(f.rgb.shape[:2], np.uint8))
    """

    def __init__(self, uri: str, out_path: str, *, mask_path: str | None = None, crf: int = 18,
                 preset: str = "medium", lossless: bool = False, mask_crf: int = 0,
                 metadata: dict[str, str] | None = None):
        self.uri = uri
        self._stack = contextlib.ExitStack()
        try:
            self._in = self._stack.enter_context(open_container(uri))
            self._vs = _video_stream(self._in, uri)
            self._as = self._in.streams.audio[0] if self._in.streams.audio else None
            self._vs.thread_type = "AUTO"
            self.fps = _rate(self._vs)
            if self.fps <= 0:
                raise VideoError("video stream has no frame rate")
            self._tb = self._vs.time_base
            self._t0 = _start(self._vs)
            self._opts = dict(crf=crf, preset=preset, lossless=lossless, mask_crf=mask_crf)
            self._out = self._stack.enter_context(
                av.open(out_path, "w", format="mp4", options={"movflags": "+use_metadata_tags+faststart"}))
            for k, v in (metadata or {}).items():
                self._out.metadata[k] = str(v)
            self._oa = self._out.add_stream_from_template(self._as) if self._as is not None else None
            self._mask = self._stack.enter_context(av.open(mask_path, "w", format="mp4")) if mask_path else None
            if self._mask is not None:
                for k, v in (metadata or {}).items():
                    self._mask.metadata[k] = str(v)
            self._ov = self._om = None
            self._pending: list = []
            self.frames_written = 0
            self.size: tuple[int, int] | None = None  # (width, height) of the output, once written
        except Exception:
            self._stack.close()
            raise

    @property
    def has_audio(self) -> bool:
        return self._as is not None

    def _stream(self, container, codec: str, pix_fmt: str, crf: int, size: tuple[int, int]):
        s = container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        s.width, s.height = size
        s.pix_fmt = pix_fmt
        s.codec_context.time_base = self._tb  # the input's, so every pts carries over exactly
        s.options = {"crf": str(crf), "preset": self._opts["preset"]}
        return s

    def frames(self) -> Iterator[SourceFrame]:
        """The input's frames in presentation order (audio is copied through meanwhile), numbered as
        ``decode_frames`` numbers them, so they pair with a faceset's ``frame_index``."""
        streams = [self._vs] + ([self._as] if self._as is not None else [])
        numbering = _Numbering()
        seq = -1
        try:
            for packet in self._in.demux(*streams):
                if packet.stream is self._as:
                    if packet.dts is not None:
                        packet.stream = self._oa
                        if self._ov is None:  # the header is written with the first packet: video first
                            self._pending.append(packet)
                        else:
                            self._out.mux(packet)
                    continue
                numbering.packet(packet)
                for frame in packet.decode():
                    seq += 1
                    idx = numbering.frame(frame.pts)
                    yield SourceFrame(idx, frame.pts, _seconds(frame.pts, self._t0, self._tb, idx, self.fps),
                                      _upright(frame))
        except av.FFmpegError as e:
            raise VideoError(f"decode failed near frame {seq}: {e}") from e

    def write(self, frame: SourceFrame, rgb: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Encodes the output (and mask) of one input frame, at the input frame's timestamp."""
        h, w = rgb.shape[:2]
        if self._ov is None:
            self.size = (w, h)
            lossless = self._opts["lossless"]
            self._ov = self._stream(self._out, "libx264rgb" if lossless else "libx264",
                                    "rgb24" if lossless else "yuv420p", 0 if lossless else self._opts["crf"], (w, h))
            if self._mask is not None:
                self._om = self._stream(self._mask, "libx264", "yuv420p", self._opts["mask_crf"], (w, h))
                self._om.codec_context.color_range = 2  # full range: luma 0..255 is the mask itself
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        out.pts, out.time_base = frame.pts, self._tb
        for packet in self._ov.encode(out):
            self._out.mux(packet)
        if self._pending:
            self._out.mux(self._pending)
            self._pending = []
        if self._om is not None:
            m = _luma_frame(mask if mask is not None else np.zeros((h, w), np.uint8))
            m.pts, m.time_base = frame.pts, self._tb
            for packet in self._om.encode(m):
                self._mask.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoders and closes every file."""
        try:
            for stream, container in ((self._ov, self._out), (self._om, self._mask)):
                if stream is not None:
                    for packet in stream.encode():
                        container.mux(packet)
        finally:
            self._stack.close()

    def __enter__(self) -> "Transcoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
