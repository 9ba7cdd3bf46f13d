"""The built-in sample: short clips animated at run time from public-domain portraits that installed
packages ship, so a user with nothing but this repository can run every stage.

- ``astronaut``: Eileen Collins, NASA portrait (public domain), from ``skimage.data.astronaut()``.
- ``grace_hopper``: Grace Hopper, US Navy portrait (public domain), from matplotlib's sample data.

Each clip is a smooth camera move over the still: zoom, rotation, translation and a lighting change,
encoded H.264 with PyAV. The result is deterministic for a given set of arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dflray.io.storage import exists, join, makedirs
from dflray.io.video import VideoWriter


@dataclass(frozen=True)
class _Portrait:
    name: str
    face_center: tuple[float, float]  # (x, y) in the still, from a face detection on it
    face_size: float  # face box side in the still, pixels


_PORTRAITS = (
    _Portrait("astronaut", (220.0, 121.0), 90.0),
    _Portrait("grace_hopper", (273.0, 232.0), 186.0),
)

SAMPLE_NAMES = tuple(p.name for p in _PORTRAITS)


def load_portrait(name: str) -> np.ndarray:
    """The RGB uint8 still behind a sample clip."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            buf = np.frombuffer(f.read(), np.uint8)
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    raise ValueError(f"unknown sample {name!r} (known: {', '.join(SAMPLE_NAMES)})")


def animate(still: np.ndarray, face_center: tuple[float, float], face_size: float, n_frames: int,
            size: int = 384, face_fraction: float = 0.35, seed: int = 0):
    """Yields RGB frames of a smooth camera move over ``still`` that keeps the face in view.

    The face starts at ``face_fraction`` of the frame side; over the clip the camera zooms in ~30%,
    rolls ±8°, drifts ±8% of the frame, and the light dims and warms then recovers.
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi, size=4)
    base_scale = face_fraction * size / face_size
    cx, cy = face_center
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        scale = base_scale * (1.0 + 0.3 * (0.5 - 0.5 * math.cos(math.pi * t)))
        angle = 8.0 * math.sin(2 * math.pi * t + phase[0])
        dx = 0.08 * size * math.sin(2 * math.pi * t + phase[1])
        dy = 0.06 * size * math.sin(2 * math.pi * t + phase[2])
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[:, 2] += (size / 2 + dx - cx, size / 2 + dy - cy)
        frame = cv2.warpAffine(still, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        light = 1.0 - 0.3 * math.sin(math.pi * t) ** 2
        warm = np.array([1.0, 1.0 - 0.08 * math.sin(math.pi * t), 1.0 - 0.15 * math.sin(math.pi * t)])
        yield np.clip(frame.astype(np.float32) * (light * warm), 0, 255).astype(np.uint8)


def make_sample(out_dir: str, seconds: float = 4.0, fps: int = 25, size: int = 384,
                names: tuple[str, ...] = SAMPLE_NAMES, overwrite: bool = False, variants: int = 1) -> list[str]:
    """Writes the sample clips as ``<out_dir>/<name>.mp4`` and returns their URIs (existing ones are reused).

    With ``variants`` > 1 each portrait also gets ``<name>_2.mp4`` … : the same person under another
    camera move (another animation seed), so a plan has several videos per identity.

    Example:
        >>> uris = make_sample("/tmp/dflray-sample", seconds=2)  # doctest: +SKIP
    """
    if variants < 1:
        raise ValueError("variants: must be >= 1")
    makedirs(out_dir)
    uris = []
    by_name = {p.name: p for p in _PORTRAITS}
    for name in names:
        p = by_name[name]
        for v in range(variants):
            clip = name if v == 0 else f"{name}_{v + 1}"
            uri = join(out_dir, f"{clip}.mp4")
            if overwrite or not exists(uri):
                still = load_portrait(name)
                n = int(round(seconds * fps))
                with VideoWriter(uri, fps=fps, size=(size, size), metadata={"comment": f"dflray sample: {clip}"}) as w:
                    for frame in animate(still, p.face_center, p.face_size, n, size=size, seed=v):
                        w.write(frame)
            uris.append(uri)
    return uris
