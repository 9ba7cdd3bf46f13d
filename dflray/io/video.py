"""Video decode and encode with PyAV, streaming: a frame at a time, never a whole video in memory.

Frames are RGB uint8 arrays, already turned upright according to the stream's rotation metadata
(the display matrix), so a phone video recorded in portrait comes out portrait.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from dflray.io.storage import fs_and_path, open_uri, protocol


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
        raise VideoError(f"cannot read {uri}: {e}") from e
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
        raise VideoError(f"cannot read {uri}: {e}") from e
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
        return VideoInfo(fps=fps, frame_count=count, width=w, height=h, rotation=rot,
                         duration=duration or count / fps, codec=s.codec_context.name,
                         has_audio=bool(c.streams.audio), frame_count_exact=exact)


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


def decode_range(uri: str, start: int = 0, end: int | None = None, every_n: int = 1,
                 threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(frame_index, rgb_frame)`` for frames ``start <= index < end`` with ``index % every_n == 0``.

    Frame indices come from presentation timestamps, so workers that seek to different ranges of the
    same video agree on numbering. Decoding starts at the keyframe before ``start``.

    Raises:
        VideoError: when the video cannot be opened or breaks mid-stream (frames before the break
            have already been yielded).
    """
    with open_container(uri) as c:
        s = _video_stream(c, uri)
        s.thread_type = "AUTO" if threads != 1 else "SLICE"
        if threads:
            s.codec_context.thread_count = threads
        fps = _rate(s)
        tb = s.time_base
        t0 = s.start_time or 0
        if start > 0:
            target = t0 + int(math.floor(Fraction(start) / Fraction(fps).limit_denominator(1_000_000) / tb)) if tb else 0
            c.seek(max(target, t0), stream=s, backward=True, any_frame=False)
        seq = -1
        try:
            for frame in c.decode(s):
                seq += 1
                if frame.pts is not None and tb:
                    idx = int(round(float((frame.pts - t0) * tb) * fps))
                else:
                    idx = seq if start == 0 else start + seq
                if idx < start:
                    continue
                if end is not None and idx >= end:
                    break
                if idx % every_n:
                    continue
                yield idx, _upright(frame)
        except av.FFmpegError as e:
            raise VideoError(f"decode failed near frame {seq}: {e}") from e


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
