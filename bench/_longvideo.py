"""A long 1080p H.264 clip for the memory benchmark, generated at run time and cached.

The camera move is a function of absolute time (periods of several seconds), not of the clip's length,
so the short clip is exactly the first seconds of the long one: the two runs differ only in length.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time

import cv2
import numpy as np

from dflray.io.video import VideoWriter
from dflray.sample import load_portrait

# Face of skimage's astronaut still (as dflray.sample's table): centre (x, y) and box side, pixels.
_FACE_CENTER = (220.0, 121.0)
_FACE_SIZE = 90.0


def frames_1080p(n_frames: int, fps: float, width: int = 1920, height: int = 1080, face_fraction: float = 0.3):
    """Yields RGB frames of a slow, periodic camera move over the astronaut portrait (like dflray.sample.animate)."""
    still = load_portrait("astronaut")
    base = face_fraction * height / _FACE_SIZE
    cx, cy = _FACE_CENTER
    for i in range(n_frames):
        t = i / fps
        scale = base * (1.0 + 0.25 * (0.5 - 0.5 * math.cos(2 * math.pi * t / 10.0)))
        angle = 8.0 * math.sin(2 * math.pi * t / 7.0)
        dx = 0.08 * width * math.sin(2 * math.pi * t / 11.0)
        dy = 0.06 * height * math.sin(2 * math.pi * t / 13.0)
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[:, 2] += (width / 2 + dx - cx, height / 2 + dy - cy)
        frame = cv2.warpAffine(still, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        # Light dims and warms with a 9 s period; a per-channel lookup table keeps this cheap at 1080p.
        s = math.sin(math.pi * t / 9.0) ** 2
        gains = (1.0 - 0.3 * s) * np.array([1.0, 1.0 - 0.08 * s, 1.0 - 0.15 * s])
        lut = np.clip(np.arange(256)[:, None] * gains[None, :], 0, 255).astype(np.uint8).reshape(256, 1, 3)
        yield cv2.LUT(frame, lut)


def long_video(cache_dir: str, seconds: float, fps: int = 25, width: int = 1920, height: int = 1080,
               log=print) -> str:
    """Path of the cached clip of ``seconds`` seconds, writing it first if it is missing."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"astronaut_{width}x{height}_{fps}fps_{seconds:g}s.mp4")
    if os.path.exists(path):
        return path
    n = int(round(seconds * fps))
    log(f"  generating {path} ({n} frames, {width}x{height} H.264; cached for later runs) ...")
    t0 = time.perf_counter()
    tmp = path + ".part.mp4"
    frames: queue.Queue = queue.Queue(maxsize=8)

    def produce() -> None:  # frame synthesis (cv2, GIL released) overlaps with encoding
        for frame in frames_1080p(n, fps, width, height):
            frames.put(frame)
        frames.put(None)

    threading.Thread(target=produce, daemon=True).start()
    with VideoWriter(tmp, fps=fps, size=(width, height), crf=23,
                     metadata={"comment": "dflray bench: long 1080p clip"}) as w:
        # VideoWriter fixes x264's preset at "medium" (~8 frames/s at 1080p on 2 cores, 6 min for 2 min of
        # video); "veryfast" is ~4x faster. The stream's options are read when the codec opens, at the
        # first write, so setting them here still takes effect.
        w._s.options = {"crf": "23", "preset": "veryfast"}
        while (frame := frames.get()) is not None:
            w.write(frame)
    os.replace(tmp, path)
    log(f"  generated in {time.perf_counter() - t0:.0f} s ({os.path.getsize(path) / 1e6:.1f} MB)")
    return path
