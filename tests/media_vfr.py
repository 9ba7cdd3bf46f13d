"""Clips with chosen frame timestamps, made with PyAV at run time: variable frame rate, B-frames,
short GOPs (so a seek lands mid-stream), a stream that starts after 0, containers without timestamps."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from tests.media import numbered_frames

TICKS = 90_000  # the encoder's time base, 1/90000 s


def vfr_times(n: int = 40, run: int = 5, short: float = 1 / 30, long: float = 1 / 10) -> list[float]:
    """Presentation times in seconds: runs of ``run`` frames ``short`` apart, then ``run`` frames ``long``
    apart, and so on. Numbering these by time × average fps gives repeated and missing numbers."""
    t, out = 0.0, []
    for i in range(n):
        out.append(t)
        t += short if (i // run) % 2 == 0 else long
    return out


def write_timed_video(path, times, frames=None, *, fmt: str | None = None, bframes: bool = True, gop: int = 8,
                      offset: float = 0.0, rate: int = 30) -> str:
    """Encodes ``frames`` (RGB; ``numbered_frames`` by default) with H.264, frame ``i`` shown at
    ``offset + times[i]`` seconds.

    Args:
        path: output file (``fmt`` or its extension picks the container; ``h264`` is a raw stream without
            timestamps).
        times: presentation times in seconds, increasing.
        frames: one RGB frame per time (default: frames whose pixels spell their index, ``read_number``).
        bframes: let x264 use B-frames (decode order differs from presentation order).
        gop: frames between keyframes.
        offset: the stream's first timestamp.
        rate: the nominal frame rate written in the stream header.
    """
    frames = numbered_frames(len(times)) if frames is None else frames
    c = av.open(str(path), "w", format=fmt)
    s = c.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    s.codec_context.time_base = Fraction(1, TICKS)
    s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "3" if bframes else "0"}
    for f, t in zip(frames, times):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        frame.pts, frame.time_base = int(round((offset + t) * TICKS)), Fraction(1, TICKS)
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return str(path)


def timestamps_by_average_fps_collide(times) -> bool:
    """Whether ``round(t × average fps)`` gives two frames one number (the old numbering's failure)."""
    fps = (len(times) - 1) / (times[-1] - times[0])
    idx = [round(t * fps) for t in times]
    return len(set(idx)) < len(idx)
