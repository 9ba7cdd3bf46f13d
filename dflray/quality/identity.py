"""Is the swapped face the source person? dlib's descriptor distances and ``swap_success``, the headline.

``swap_success`` is the share of a fake's sampled frames in which the face found in the fake is
recognised as the source: nearer the source identity (the mean descriptor of the source's faces) than
the real face it replaced, and under dlib's same-person distance. A frame where no face was found in the
fake is a failure. When the fake is softer than the real face, ``FaceMeasurer`` also describes the real
face blurred to the fake's detail (``metrics.blur_like``) and the fake must read as the source against it
too: blur alone moves dlib's descriptor, and a blurred destination is not a swap.

Example:
    >>> src, real = np.zeros(128), np.full(128, 0.1)
    >>> swap_success([src + 0.01, real, None], [real] * 3, src)  # a swap, an untouched frame, no face
    0.3333333333333333
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SAME_PERSON_THRESHOLD", "frame_swapped", "identity_distance", "swap_success"]

# dlib's convention for its 128-D descriptor: two faces nearer than this are the same person (99.38% on
# LFW at this threshold).
SAME_PERSON_THRESHOLD = 0.6


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two identity descriptors (dlib: < 0.6 is the same person).

    Args:
        a: (128,) descriptor.
        b: (128,) descriptor.

    Returns:
        The distance, >= 0.

    Raises:
        ValueError: if the descriptors differ in shape or are not 1-D.

    Example:
        >>> identity_distance(np.zeros(128), np.full(128, 0.1)) > 0.6
        True
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"descriptors must be 1-D and of equal length, got {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b))


def _source_mean(source: np.ndarray) -> np.ndarray:
    """The source identity as one finite (128,) descriptor: ``source`` itself, or the mean of (N, 128)."""
    src = np.asarray(source, np.float64)
    if src.ndim == 2 and len(src):
        src = src.mean(0)
    if src.shape != (128,) or not np.isfinite(src).all():
        raise ValueError(f"source embedding must be a finite (128,) descriptor or (N, 128) of them, "
                         f"got shape {np.shape(source)}")
    return src


def frame_swapped(fake: np.ndarray | None, real: np.ndarray, source: np.ndarray,
                  threshold: float = SAME_PERSON_THRESHOLD, soft_real: np.ndarray | None = None) -> bool:
    """Whether one frame's swapped face is recognised as the source person.

    It is when its descriptor is nearer the source identity than the real face it replaced, and
    nearer than ``threshold`` (the same person by dlib's convention). Both conditions matter: the
    first alone accepts a face that resembles nobody, the second alone accepts an unchanged frame
    when the source happens to look like the destination. When the fake is softer than the real face,
    ``soft_real`` (the real face blurred to the fake's detail, ``blur_like``) is a third face the fake
    must be farther from than from the source: blur alone moves a descriptor, and a blurred destination
    is not a swap.

    Args:
        fake: (128,) descriptor of the face found in the fake frame; None when no face was found
            there (a failure).
        real: (128,) descriptor of the real (destination) face in the same frame.
        source: (128,) mean descriptor of the source identity, or (N, 128) descriptors to average.
        threshold: same-person distance.
        soft_real: (128,) descriptor of the real face blurred to the fake's detail; None when the fake
            is about as detailed as the real face (``DETAIL_MATCH``) and ``real`` is the reference.

    Returns:
        True when the fake frame reads as the source.

    Raises:
        ValueError: for descriptors of the wrong shape or a threshold <= 0.

    Example:
        >>> src, real = np.zeros(128), np.full(128, 0.1)  # 1.13 apart: two people
        >>> frame_swapped(src + 0.01, real, src), frame_swapped(real, real, src), frame_swapped(None, real, src)
        (True, False, False)
        >>> blurred_dst = np.full(128, 0.03)  # nearer the source (0.34) than its sharp self (0.79)
        >>> frame_swapped(blurred_dst, real, src), frame_swapped(blurred_dst, real, src, soft_real=blurred_dst)
        (True, False)
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    src = _source_mean(source)
    if fake is None:
        return False
    d_src = identity_distance(fake, src)
    ok = d_src < threshold and d_src < identity_distance(fake, real)
    return ok and (soft_real is None or d_src < identity_distance(fake, soft_real))


def swap_success(fake_embeddings: Sequence[np.ndarray | None], real_embeddings: Sequence[np.ndarray],
                 source_embedding: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD,
                 soft_embeddings: Sequence[np.ndarray | None] | None = None) -> float | None:
    """The share of frames whose swapped face is recognised as the source (see ``frame_swapped``).

    Args:
        fake_embeddings: per sampled frame, the (128,) descriptor of the face found in the fake, or
            None when no face was found there: that frame counts as a failure, not as missing.
        real_embeddings: per sampled frame, the (128,) descriptor of the real face it replaced.
        source_embedding: the source identity's mean descriptor (128,), or (N, 128) descriptors
            to be averaged.
        threshold: same-person distance (dlib's 0.6).
        soft_embeddings: per sampled frame, the descriptor of the real face blurred to the fake's detail
            (``blur_like``), or None for a frame whose fake is as detailed as the real face; None: no
            blur guard (every frame judged against the real face only).

    Returns:
        The share of successful frames in [0, 1]; None when there are no frames.

    Raises:
        ValueError: when the sequences differ in length, a real descriptor is missing, or a
            descriptor has the wrong shape.

    Example:
        >>> src, real = np.zeros(128), np.full(128, 0.1)
        >>> swap_success([src + 0.01, real, None], [real] * 3, src)  # a swap, an untouched frame, no face
        0.3333333333333333
        >>> swap_success([], [], src) is None
        True
    """
    if len(fake_embeddings) != len(real_embeddings):
        raise ValueError(f"fake_embeddings and real_embeddings differ in length: {len(fake_embeddings)} and "
                         f"{len(real_embeddings)}")
    softs = [None] * len(fake_embeddings) if soft_embeddings is None else list(soft_embeddings)
    if len(softs) != len(fake_embeddings):
        raise ValueError(f"soft_embeddings has {len(softs)} frames, fake_embeddings {len(fake_embeddings)}")
    src = _source_mean(source_embedding)
    if not len(fake_embeddings):
        return None
    hits = 0
    for i, (fake, real, soft) in enumerate(zip(fake_embeddings, real_embeddings, softs)):
        if real is None:  # without the real face there is nothing to be nearer than; the caller leaves it out
            raise ValueError(f"real_embeddings[{i}] is None: leave frames without a real face out")
        hits += frame_swapped(fake, real, src, threshold, soft)
    return hits / len(fake_embeddings)
