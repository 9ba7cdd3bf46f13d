"""Test media made at run time (no third-party media in the repo), and access to ../shared/media."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def shared_media(name: str) -> str:
    """Path of a file in ../shared/media, or skip the test with the reason."""
    p = SHARED_MEDIA / name
    if not p.is_file():
        pytest.skip(f"{p} is absent (real test media live in ../shared/media beside the repo)")
    return str(p)


def write_video(path, frames, fps=25, rotation=0, pix_fmt="yuv420p", codec="libx264") -> str:
    """Encodes RGB frames (or grey frames when pix_fmt is gray) with PyAV; optional display rotation."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    h, w = frames[0].shape[:2]
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    if rotation:
        s.set_display_rotation(rotation)
    for f in frames:
        fmt = "gray" if f.ndim == 2 else "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=fmt)):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return str(path)


def numbered_frames(n, h=64, w=96):
    """Frames whose index is readable back from their pixels: block k of 8 is bright iff bit k is set."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        for k in range(8):
            if (i >> k) & 1:
                f[:, k * (w // 8):(k + 1) * (w // 8)] = 255
        out.append(f)
    return out


def read_number(frame):
    w = frame.shape[1]
    return sum(1 << k for k in range(8) if frame[:, k * (w // 8):(k + 1) * (w // 8)].mean() > 128)


def truncate(src: str, dst, fraction=0.5) -> str:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return str(dst)


def corrupt_middle(src: str, dst, seed=0) -> str:
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    a = len(data) // 3
    data[a:a + len(data) // 3] = rng.integers(0, 256, len(data) // 3, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return str(dst)


__all__ = ["SHARED_MEDIA", "shared_media", "write_video", "numbered_frames", "read_number", "truncate",
           "corrupt_middle", "os"]
