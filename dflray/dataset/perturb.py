"""The dataset's last stage: DeeperForensics-1.0's seven distortions, then a FaceForensics++ encode.

Every output video, real or fake alike (so the distortion is no cue to the label), gets zero, one or a
mix of distortions drawn from its seed, and is written at each FaceForensics++ compression level:
``c0`` (lossless), ``c23`` (x264 CRF 23, "HQ") and ``c40`` (CRF 40, "LQ").

The distortions follow DeeperForensics-1.0 (Jiang et al., CVPR 2020, ``perturbation/distortions.py``),
each at five levels (``LEVELS``, 1 mild .. 5 strong):

- ``saturation`` (DF-1.0 "CS"): the chroma (Cb, Cr of BT.601 YCbCr) is scaled by the parameter about
  neutral grey, luma kept: ``rgb -> Y + p (rgb - Y)``; 0.0 is greyscale.
- ``contrast`` ("CC"): every pixel value is multiplied by the parameter (towards black, so the image
  also darkens: mean and standard deviation both scale by ``p``).
- ``block`` ("BW"): 8×8 blocks of grey (128, 128, 128) pasted at uniformly random positions, drawn
  anew for every frame. The parameter is the block count per 256 pixels of the frame's shorter side:
  ``(min(h, w) // 256) * p`` blocks, so a 1080p frame gets 4p blocks, a 720p one 2p, and a frame under
  256 pixels none (DF-1.0's scaling, kept).
- ``noise`` ("GNC"): white Gaussian noise added independently to Y, Cb and Cr; the parameter is its
  variance in studio-swing YCbCr normalised to [0, 1] (Y spanning 219/255, chroma 224/255 of the
  range), i.e. a standard deviation of ``sqrt(p) * 255 / 219`` of full-scale luma and
  ``sqrt(p) * 255 / 224`` of full-scale chroma.
- ``blur`` ("GB"): OpenCV's Gaussian blur with a ``p``×``p`` kernel and sigma ``p / 6``.
- ``resolution`` (DF-1.0's "JPEG", which is really a resampling): bilinear down-scaling of each side
  by the integer factor ``p`` (``w // p``, ``h // p``) then bilinear up-scaling back to the frame size.
- ``compression`` ("VC"): the video is encoded with H.264 at CRF ``p`` (ffmpeg's libx264 defaults).

Differences from DF-1.0's code, on purpose: values are rounded to the nearest integer where DF-1.0
truncates (``astype(uint8)``, a systematic -0.5 darkening); a mix is applied in one pass in the fixed
order ``FRAME_ORDER`` where DF-1.0 re-runs its script (re-encoding the video between distortions);
randomness comes from a per-frame ``numpy.random.Generator`` derived from the video's seed, so a rerun
is bit-identical.

The ``compression`` distortion and the compression level share one encode: its CRF is the larger (the
coarser) of the two (``final_crf``); ``c0`` without a ``compression`` distortion is lossless RGB.

Example:
    >>> dists = parse_spec("blur:3+noise:2")
    >>> spec_string(dists), final_crf(dists, "c23")
    ('noise:2+blur:3', 23)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

from dflray.config import PERTURB_KINDS, PerturbConfig
from dflray.io.video import Transcoder, VideoError, open_container

__all__ = ["CRF", "FRAME_ORDER", "LEVELS", "X264_PRESETS", "Distortion", "apply_frame", "distortion_values",
           "draw_distortions", "encoded_crf", "final_crf", "frame_rng", "parse_spec", "perturb_video",
           "spec_string"]

LEVELS: dict[str, tuple[float | int, ...]] = {
    "saturation": (0.4, 0.3, 0.2, 0.1, 0.0),  # chroma scale; smaller is stronger
    "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),  # pixel value scale; smaller is stronger
    "block": (16, 32, 48, 64, 80),  # 8×8 grey blocks per 256 px of the shorter side
    "noise": (0.001, 0.002, 0.005, 0.01, 0.05),  # variance in normalised studio-swing YCbCr
    "blur": (7, 9, 13, 17, 21),  # Gaussian kernel size (sigma = size / 6)
    "resolution": (2, 3, 4, 5, 6),  # down-scale then up-scale factor
    "compression": (30, 32, 35, 38, 40),  # H.264 CRF
}

CRF: dict[str, int] = {"c0": 0, "c23": 23, "c40": 40}

# Optics and resampling first, then colour, then noise; grey blocks last so that they stay flat grey
# (a transmission-style loss on top of the picture); the compression is the final encode.
FRAME_ORDER = ("blur", "resolution", "saturation", "contrast", "noise", "block")

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

BLOCK_SIZE = 8
BLOCK_GREY = 128

# Salts keep the streams drawn from one video seed apart from each other and from other stages' uses.
_DRAW_SALT = 0x5045_5254  # "PERT"
_FRAME_SALT = 0x4652_4D45  # "FRME"

# BT.601 full-range RGB -> YCbCr (chroma centred on 0, in [-0.5, 0.5]), and its exact inverse.
_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
                     [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)
_STUDIO_SCALE = np.array([219 / 255, 224 / 255, 224 / 255])  # full range -> studio swing, per Y/Cb/Cr


@dataclass(frozen=True)
class Distortion:
    """One distortion: a kind of ``PERTURB_KINDS`` at a level 1..5.

    Raises:
        ValueError: for an unknown kind or a level outside 1..5.

    Example:
        >>> d = Distortion("blur", 3)
        >>> str(d), d.value
        ('blur:3', 13)
    """

    kind: str
    level: int

    def __post_init__(self) -> None:
        if self.kind not in LEVELS:
            raise ValueError(f"perturbation kind {self.kind!r} is unknown (known: {', '.join(PERTURB_KINDS)})")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, np.integer)) or not 1 <= self.level <= 5:
            raise ValueError(f"perturbation level of {self.kind} must be an integer in 1..5, got {self.level!r}")
        object.__setattr__(self, "level", int(self.level))

    @property
    def value(self) -> float | int:
        """The distortion's parameter at this level (``LEVELS[kind][level - 1]``)."""
        return LEVELS[self.kind][self.level - 1]

    def __str__(self) -> str:
        return f"{self.kind}:{self.level}"


def _canonical(dists: Iterable[Distortion] | str) -> tuple[Distortion, ...]:
    """Distortions in ``PERTURB_KINDS`` order; a spec string is parsed. Raises on a repeated kind."""
    if isinstance(dists, str):
        return parse_spec(dists)
    out = tuple(dists)
    for d in out:
        if not isinstance(d, Distortion):
            raise ValueError(f"distortions must be Distortion objects, got {d!r}")
    kinds = [d.kind for d in out]
    for k in set(kinds):
        if kinds.count(k) > 1:
            raise ValueError(f"perturbation lists {k} twice; each kind may appear once")
    return tuple(sorted(out, key=lambda d: PERTURB_KINDS.index(d.kind)))


def parse_spec(spec: str) -> tuple[Distortion, ...]:
    """Parses ``"kind:level+kind:level"`` (or ``"none"``/``""``) into distortions in ``PERTURB_KINDS`` order.

    Raises:
        ValueError: for a malformed item, an unknown kind, a level outside 1..5 or a repeated kind.

    Example:
        >>> parse_spec("blur:3+noise:2")
        (Distortion(kind='noise', level=2), Distortion(kind='blur', level=3))
    """
    text = spec.strip()
    if text in ("", "none"):
        return ()
    dists = []
    for item in text.split("+"):
        m = re.fullmatch(r"\s*([a-z_]+)\s*:\s*(\d+)\s*", item)
        if m is None:
            raise ValueError(f"perturbation spec item {item!r} is not 'kind:level' (e.g. 'blur:3'), in {spec!r}")
        dists.append(Distortion(m.group(1), int(m.group(2))))
    return _canonical(dists)


def spec_string(dists: Iterable[Distortion]) -> str:
    """The canonical spec of distortions: ``"kind:level+…"`` in ``PERTURB_KINDS`` order, ``"none"`` if empty.

    Example:
        >>> spec_string([Distortion("blur", 3), Distortion("saturation", 1)]), spec_string(())
        ('saturation:1+blur:3', 'none')
    """
    dists = _canonical(dists)
    return "+".join(str(d) for d in dists) if dists else "none"


def distortion_values(dists: Iterable[Distortion]) -> dict[str, float | int]:
    """``{kind: parameter}`` of distortions (the index's ``perturbation_values``), in ``PERTURB_KINDS`` order.

    Example:
        >>> distortion_values(parse_spec("compression:2+contrast:1"))
        {'contrast': 0.85, 'compression': 32}
    """
    return {d.kind: d.value for d in _canonical(dists)}


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def draw_distortions(cfg: PerturbConfig, seed: int) -> tuple[Distortion, ...]:
    """Draws a video's distortions from its seed, reproducibly.

    With probability ``cfg.fraction`` the video is distorted; of those, with probability
    ``cfg.mix_fraction`` it gets ``mix_min..mix_max`` distinct kinds (both capped at ``len(cfg.kinds)``),
    otherwise one. Kinds are drawn uniformly from ``cfg.kinds`` without replacement, each level
    uniformly from ``cfg.levels``.

    Args:
        cfg: the perturbation config.
        seed: the video's seed (a non-negative integer).

    Returns:
        The distortions in ``PERTURB_KINDS`` order; empty for an undistorted video.

    Raises:
        ValueError: for a negative or non-integer seed.

    Example:
        >>> draw_distortions(PerturbConfig(fraction=1.0, mix_fraction=0.0, kinds=("blur",), levels=(2,)), 7)
        (Distortion(kind='blur', level=2),)
    """
    rng = np.random.default_rng([_DRAW_SALT, _check_seed(seed)])
    distorted, mixed = rng.random(2)
    if distorted >= cfg.fraction:
        return ()
    k = len(cfg.kinds)
    n = 1
    if mixed < cfg.mix_fraction and k > 1:
        n = int(rng.integers(min(cfg.mix_min, k), min(cfg.mix_max, k), endpoint=True))
    kinds = rng.choice(k, size=n, replace=False)
    levels = rng.choice(np.asarray(cfg.levels), size=n)
    return _canonical(Distortion(cfg.kinds[i], int(lv)) for i, lv in zip(kinds, levels))


def frame_rng(seed: int, frame_number: int) -> np.random.Generator:
    """The generator of one frame's random distortions (block positions, noise) in ``perturb_video``.

    Args:
        seed: the video's seed.
        frame_number: the frame's position in the video, from 0.
    """
    return np.random.default_rng([_FRAME_SALT, _check_seed(seed), int(frame_number)])


# ------------------------------------------------------------------------------------ frame-wise kinds


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _saturation(rgb: np.ndarray, p: float) -> np.ndarray:
    # Scaling Cb and Cr by p with Y kept is, in RGB, moving every channel towards the luma by p: one
    # 3×3 matrix, p I + (1 - p) [luma weights in every row]; cv2.transform rounds and saturates to uint8.
    m = p * np.eye(3) + (1 - p) * np.repeat(_RGB2YCC[:1], 3, axis=0)
    return cv2.transform(rgb, m.astype(np.float32))


def _contrast(rgb: np.ndarray, p: float) -> np.ndarray:
    return cv2.convertScaleAbs(rgb, alpha=float(p))


def _block(rgb: np.ndarray, per_256: int, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    n = min(h, w) // 256 * int(per_256)
    out = rgb.copy()
    if n == 0:
        return out
    xs = rng.integers(0, w - BLOCK_SIZE, size=n)  # the block lies inside the frame, as in DF-1.0
    ys = rng.integers(0, h - BLOCK_SIZE, size=n)
    for x, y in zip(xs, ys):
        out[y:y + BLOCK_SIZE, x:x + BLOCK_SIZE] = BLOCK_GREY
    return out


def _noise(rgb: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    # The variance is in studio-swing units; in full-range [0, 1] units each std is larger by 1/scale.
    std = (np.sqrt(variance) / _STUDIO_SCALE * 255.0).astype(np.float32)
    ycc_noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    rgb_noise = cv2.transform(ycc_noise, (_YCC2RGB * std).astype(np.float32))
    return _to_uint8(rgb_noise + rgb)


def _blur(rgb: np.ndarray, size: int) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (int(size), int(size)), size / 6.0)


def _resolution(rgb: np.ndarray, factor: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // int(factor)), max(1, h // int(factor))), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def apply_frame(rgb: np.ndarray, dists: Iterable[Distortion] | str, rng: np.random.Generator) -> np.ndarray:
    """Applies the frame-wise distortions (all but ``compression``) to one frame, in ``FRAME_ORDER``.

    Args:
        rgb: H×W×3 uint8 RGB frame (not modified).
        dists: the video's distortions (or their spec string); ``compression`` is ignored here.
        rng: source of the random kinds' randomness (``block`` positions, ``noise``); use
            ``frame_rng(seed, i)`` for frame ``i`` of a video.

    Returns:
        The distorted frame, a new H×W×3 uint8 array.

    Raises:
        ValueError: for a frame that is not H×W×3 uint8, or invalid distortions.

    Example:
        >>> img = np.full((256, 256, 3), 200, np.uint8)
        >>> int(apply_frame(img, "contrast:3", np.random.default_rng(0))[0, 0, 0])
        120
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frame must be an H×W×3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    by_kind = {d.kind: d.value for d in _canonical(dists)}
    out = rgb.copy()
    for kind in FRAME_ORDER:
        if kind not in by_kind:
            continue
        p = by_kind[kind]
        if kind == "blur":
            out = _blur(out, p)
        elif kind == "resolution":
            out = _resolution(out, p)
        elif kind == "saturation":
            out = _saturation(out, p)
        elif kind == "contrast":
            out = _contrast(out, p)
        elif kind == "noise":
            out = _noise(out, p, rng)
        elif kind == "block":
            out = _block(out, p, rng)
    return out


# ------------------------------------------------------------------------------------ encode


def final_crf(dists: Iterable[Distortion] | str, compression: str) -> int:
    """The CRF of a video's output encode.

    The ``compression`` distortion sets it unless the compression level is coarser:
    ``max(vc_crf, CRF[compression])``; without that distortion it is ``CRF[compression]``, and 0 (``c0``)
    means lossless.

    Raises:
        ValueError: for an unknown compression level.

    Example:
        >>> final_crf("compression:1", "c23"), final_crf("compression:1", "c40"), final_crf("", "c0")
        (30, 40, 0)
    """
    if compression not in CRF:
        raise ValueError(f"compression must be one of {', '.join(CRF)}, got {compression!r}")
    vc = distortion_values(_canonical(dists)).get("compression")
    return max(int(vc), CRF[compression]) if vc is not None else CRF[compression]


def perturb_video(src: str, dst_local_path: str, dists: Sequence[Distortion] | str, compression: str, seed: int,
                  *, preset: str = "medium", metadata: dict[str, str] | None = None) -> dict:
    """Writes the perturbed, re-encoded H.264 MP4 of one video.

    Every frame keeps its timestamp and the audio is copied through (``dflray.io.video.Transcoder``).
    Frame ``i`` is distorted with ``apply_frame(rgb, dists, frame_rng(seed, i))``; the encode's CRF is
    ``final_crf(dists, compression)``, and CRF 0 is lossless RGB (libx264rgb), bit-exact to those frames.

    Args:
        src: the input video (any fsspec URI).
        dst_local_path: the output MP4, a local path.
        dists: the distortions (or their spec string).
        compression: ``c0``, ``c23`` or ``c40``.
        seed: the video's seed (the same seed gives the same output).
        preset: the x264 preset.
        metadata: container tags to write.

    Returns:
        ``{"frames", "fps", "width", "height", "has_audio", "crf"}`` of the output.

    Raises:
        ValueError: for invalid distortions, compression, preset or seed.
        dflray.io.video.VideoError: when the input cannot be decoded.

    Example:
        >>> info = perturb_video("in.mp4", "/tmp/out.mp4", "blur:2", "c23", seed=5)  # doctest: +SKIP
        >>> info["crf"]  # doctest: +SKIP
        23
    """
    dists = _canonical(dists)
    crf = final_crf(dists, compression)
    seed = _check_seed(seed)
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    with Transcoder(src, dst_local_path, crf=crf, preset=preset, lossless=crf == 0, metadata=metadata) as t:
        for i, frame in enumerate(t.frames()):
            t.write(frame, apply_frame(frame.rgb, dists, frame_rng(seed, i)))
        width, height = t.size or (0, 0)
        return {"frames": t.frames_written, "fps": t.fps, "width": width, "height": height,
                "has_audio": t.has_audio, "crf": crf}


_X264_INFO = b"x264 - core"


def encoded_crf(path: str) -> float | None:
    """The CRF an x264 stream was encoded with, read from the option string x264 writes into it.

    libx264 stores its settings (``"… rc=crf … crf=23.0 …"``) in an SEI user-data NAL of the first
    frame. Lossless encodes are constant-QP 0 (``rc=cqp … qp=0``) and give 0.0.

    Args:
        path: the video (any fsspec URI).

    Returns:
        The CRF, 0.0 for lossless, or None when the stream carries no x264 settings or another rate
        control (constant QP above 0, ABR).

    Raises:
        dflray.io.video.VideoError: when the file cannot be opened or has no video stream.

    Example:
        >>> encoded_crf("out.mp4")  # doctest: +SKIP
        23.0
    """
    with open_container(path) as c:
        if not c.streams.video:
            raise VideoError(f"no video stream in {path}")
        s = c.streams.video[0]
        blobs = [bytes(s.codec_context.extradata or b"")]
        for n, packet in enumerate(c.demux(s)):
            if n >= 8:
                break
            blobs.append(bytes(packet))
    for blob in blobs:
        i = blob.find(_X264_INFO)
        if i < 0:
            continue
        end = blob.find(b"\x00", i)
        opts = blob[i:end if end >= 0 else len(blob)].decode("latin-1")
        rc = re.search(r"\brc=(\w+)", opts)
        if rc and rc.group(1) == "crf":
            m = re.search(r"\bcrf=([0-9.]+)", opts)
            return float(m.group(1)) if m else None
        if rc and rc.group(1) == "cqp":
            m = re.search(r"\bqp=([0-9]+)", opts)
            return 0.0 if m and int(m.group(1)) == 0 else None
        return None
    return None
