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


__all__ = ["SHARED_MEDIA", "shared_media", "write_video", "write_av_clip", "numbered_frames", "read_number", "truncate",
           "corrupt_middle", "os"]


# dlib 68-point landmarks (frontal HOG detector, upsample 1) of skimage.data.astronaut(), frame pixels.
ASTRONAUT_LM = np.array([
    [179, 104], [180, 116], [181, 127], [182, 139], [185, 150], [191, 160], [200, 168], [209, 176], [220, 178],
    [232, 177], [243, 171], [253, 163], [260, 154], [265, 143], [268, 131], [270, 120], [272, 108], [186, 94],
    [192, 88], [200, 87], [208, 89], [216, 92], [236, 93], [244, 91], [252, 91], [260, 92], [265, 99], [226, 102],
    [225, 111], [225, 119], [225, 127], [214, 131], [219, 133], [224, 134], [229, 133], [234, 132], [195, 101],
    [200, 98], [207, 98], [212, 104], [206, 104], [199, 104], [237, 106], [243, 100], [250, 100], [255, 105],
    [250, 107], [244, 107], [201, 139], [209, 139], [218, 139], [224, 141], [230, 140], [238, 140], [246, 141],
    [238, 151], [229, 155], [222, 156], [216, 155], [208, 150], [204, 141], [218, 143], [223, 144], [230, 143],
    [243, 142], [229, 150], [223, 151], [217, 150]], dtype=np.float64)


def write_av_clip(path, frames, fps=25, sample_rate=16000, codec="libx264", pix_fmt="yuv420p", crf=None) -> str:
    """Encodes RGB frames plus a 440 Hz AAC tone as long as the video (a clip with real audio packets)."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    h, w = frames[0].shape[:2]
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    if crf is not None:
        s.options = {"crf": str(crf)}
    a = c.add_stream("aac", rate=sample_rate)
    a.layout = "mono"
    n = int(len(frames) / fps * sample_rate)
    t = np.arange(n) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    frame_size = a.codec_context.frame_size or 1024
    for i, f in enumerate(frames):
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
            c.mux(p)
    for k in range(0, n, frame_size):
        chunk = tone[:, k:k + frame_size]
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
        af.sample_rate, af.pts = sample_rate, k
        for p in a.encode(af):
            c.mux(p)
    for st in (s, a):
        for p in st.encode():
            c.mux(p)
    c.close()
    return str(path)
