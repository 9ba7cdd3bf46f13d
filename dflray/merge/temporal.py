"""Temporal stability of one face's track: landmark smoothing, jitter measurement and face motion.

A per-frame landmark detector jitters by a pixel or two even on a still face. The merge pastes the
swapped face through the similarity fitted to those landmarks, so the jitter moves, turns and scales
the pasted face from frame to frame. DeepFaceLab does not smooth; dflray optionally does, offline,
over each identity's whole track: a centred Savitzky-Golay filter (a sliding least-squares polynomial
fit) on every landmark coordinate. A centred fit has no lag, and with order 2 it reproduces constant
velocity and constant acceleration exactly, so pans and zooms pass through unchanged while the
frame-to-frame noise is averaged away. The track is split where the face is missing (NaN) or jumps
(a cut or a tracker switch) and each piece is smoothed on its own.

``jitter`` measures what is smoothed away: the mean magnitude of the second difference
``p[t+1] − 2p[t] + p[t−1]`` of tracked points, in pixels (zero for any constant-velocity motion);
``crop_corners`` turns a landmark track into the track of the pasted crop's corners, which is what
the viewer sees move. ``face_motion`` is DFL's per-frame motion vector that drives the merger's
motion blur.

Example:
    >>> rng = np.random.default_rng(0)
    >>> track = np.zeros((50, 68, 2)) + np.arange(50)[:, None, None]  # a pan, 1 px per frame
    >>> noisy = track + rng.normal(0, 1, track.shape)
    >>> bool(jitter(smooth_landmarks(noisy, 9)) < 0.2 * jitter(noisy))
    True
"""

from __future__ import annotations

import math

import numpy as np

from dflray.face.align import get_transform_mat, transform_points

__all__ = ["crop_corners", "face_motion", "jitter", "savgol_weights", "smooth_landmarks"]


def savgol_weights(window: int, order: int) -> np.ndarray:
    """The ``window × window`` hat matrix of a least-squares polynomial fit over ``window`` samples.

    Row ``j`` holds the weights that evaluate, at sample ``j``, the degree-``order`` polynomial
    fitted to all ``window`` samples. The middle row is the Savitzky-Golay smoothing kernel; the
    first and last rows smooth the ends of a track from the first or last full window, so ends get
    no lag either.

    Example:
        >>> w = savgol_weights(5, 1)
        >>> np.allclose(w[2], 0.2), np.allclose(w @ np.arange(5.0), np.arange(5.0))
        (True, True)
    """
    if window < 1 or order < 0:
        raise ValueError(f"need window >= 1 and order >= 0, got {window}, {order}")
    order = min(order, window - 1)
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2
    vander = np.vander(x / max(window, 1), order + 1, increasing=True)  # scaled for conditioning
    return vander @ np.linalg.pinv(vander)


def _smooth_run(run: np.ndarray, window: int, order: int) -> np.ndarray:
    """Smooths one gap-free (T, ...) segment along its first axis."""
    t = len(run)
    w = min(window, t if t % 2 else t - 1)
    if w < 3:
        return run.copy()
    hat = savgol_weights(w, order)
    flat = run.reshape(t, -1)
    out = np.empty_like(flat)
    half = w // 2
    centre = hat[half]
    # Interior: correlate each coordinate series with the centred kernel.
    windows = np.lib.stride_tricks.sliding_window_view(flat, w, axis=0)  # (t - w + 1, C, w)
    out[half:t - half] = windows @ centre
    out[:half] = hat[:half] @ flat[:w]
    out[t - half:] = hat[w - half:] @ flat[t - w:]
    return out.reshape(run.shape)


def _face_size(points: np.ndarray) -> np.ndarray:
    """Per-frame face scale: the diagonal of the landmarks' bounding box."""
    span = points.max(axis=1) - points.min(axis=1)  # NaN for a missing face
    return np.hypot(span[:, 0], span[:, 1])


def smooth_landmarks(tracks: np.ndarray, window: int = 7, *, order: int = 2,
                     max_jump: float | None = 0.5) -> np.ndarray:
    """Smooths one face's landmark track over time (centred Savitzky-Golay on every coordinate).

    Args:
        tracks: (T, N, 2) landmark positions per frame (frame pixels), N = 68 for dlib points;
            a frame whose face is missing is all NaN.
        window: frames in the sliding fit (odd; an even value is made odd by adding 1). 1 disables.
        order: polynomial order of the fit; 2 keeps constant acceleration, 1 constant velocity.
        max_jump: split the track where the landmarks' centroid moves more than this many face sizes
            (landmark bounding-box diagonals) between consecutive frames; None never splits.

    Returns:
        The smoothed (T, N, 2) float64 track; NaN frames stay NaN. Segments shorter than 3 frames are
        returned as they are.

    Raises:
        ValueError: if ``tracks`` is not (T, N, 2) or ``window`` < 1.

    Example:
        >>> pan = np.zeros((20, 68, 2)) + np.arange(20)[:, None, None] * 3.0
        >>> bool(np.allclose(smooth_landmarks(pan, 7), pan))
        True
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise ValueError(f"tracks must have shape (T, N, 2), got {tracks.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window += 1 - window % 2
    out = tracks.copy()
    if window < 3 or len(tracks) < 3:
        return out
    valid = np.isfinite(tracks).all(axis=(1, 2))
    breaks = ~valid[1:] | ~valid[:-1]
    if max_jump is not None and valid.sum() > 1:
        with np.errstate(invalid="ignore"):
            centre = tracks.mean(axis=1)
            step = np.hypot(*(centre[1:] - centre[:-1]).T)
            size = np.fmax(_face_size(tracks)[1:], _face_size(tracks)[:-1])
            breaks |= step > max_jump * size
    start = 0
    for end in [*np.flatnonzero(breaks) + 1, len(tracks)]:
        if valid[start:end].all() and end - start >= 3:
            out[start:end] = _smooth_run(tracks[start:end], window, order)
        start = end
    return out


def jitter(tracks: np.ndarray) -> float:
    """Mean second-difference magnitude of tracked points, in pixels per frame².

    ``mean ‖p[t+1] − 2 p[t] + p[t−1]‖`` over frames and points: 0 for a still or uniformly moving
    face, about ``√6 σ`` for independent per-frame noise of standard deviation σ per axis. Triples
    touching a missing (NaN) frame are skipped.

    Args:
        tracks: (T, N, 2) or (T, 2) points per frame.

    Returns:
        The mean, or NaN when no three consecutive frames are present.

    Example:
        >>> jitter(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 1.0]]))
        0.5
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim == 2:
        tracks = tracks[:, None]
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must have shape (T, N, 2) or (T, 2), got {tracks.shape}")
    if len(tracks) < 3:
        return float("nan")
    acc = np.linalg.norm(tracks[2:] - 2 * tracks[1:-1] + tracks[:-2], axis=-1)
    acc = acc[np.isfinite(acc).all(axis=1)]
    return float(acc.mean()) if acc.size else float("nan")


def crop_corners(tracks: np.ndarray, face_type: str = "full", size: int = 256) -> np.ndarray:
    """Frame positions of an aligned crop's four corners and centre, per frame.

    This is where the merge pastes the swapped face, so ``jitter(crop_corners(track))`` measures the
    jitter a viewer sees (translation, rotation and scale of the pasted square).

    Args:
        tracks: (T, 68, 2) landmark track; NaN frames give NaN.
        face_type: the crop's face type (``dflray.face.align``).
        size: crop side; it does not change the frame positions.

    Returns:
        (T, 5, 2) float64: top-left, top-right, bottom-right, bottom-left corners and the centre.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    local = np.array([[0, 0], [size, 0], [size, size], [0, size], [size / 2, size / 2]], np.float64)
    out = np.full((len(tracks), 5, 2), np.nan)
    for t, lm in enumerate(tracks):
        if np.isfinite(lm).all():
            out[t] = transform_points(local, get_transform_mat(lm, size, face_type), invert=True)
    return out


def face_motion(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DFL's per-frame face motion, which drives the merger's motion blur.

    For frame t the face centre is pixel (127, 127) of its 256-pixel ``full`` crop mapped back to the
    frame; the motion vector is that centre at t+1 minus the centre at t−1 (clamped at the ends of
    the track). Its length is the power in frame pixels, its direction the angle in degrees
    counter-clockwise with y up (``-atan2(dy, dx)``). DFL computes this only for single-face videos;
    frames next to a missing face get power 0.

    Args:
        tracks: (T, 68, 2) landmark track of one face; NaN frames for a missing face.

    Returns:
        (power, degrees): two float64 arrays of length T.

    Example:
        >>> power, deg = face_motion(np.stack([lm, lm + [4, 0], lm + [8, 0]]))  # doctest: +SKIP
        >>> power[1], deg[1]  # doctest: +SKIP
        (8.0, -0.0)
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    centres = np.full((len(tracks), 2), np.nan)
    for i, lm in enumerate(tracks):
        if np.isfinite(lm).all():
            centres[i] = transform_points(np.array([[127.0, 127.0]]), get_transform_mat(lm, 256, "full"),
                                          invert=True)[0]
    t = len(centres)
    power = np.zeros(t)
    deg = np.zeros(t)
    for i in range(t):
        d = centres[min(i + 1, t - 1)] - centres[max(i - 1, 0)]
        if not np.isfinite(d).all():
            continue
        power[i] = math.hypot(d[0], d[1])
        deg[i] = -math.degrees(math.atan2(d[1], d[0])) if power[i] > 0 else 0.0
    return power, deg
