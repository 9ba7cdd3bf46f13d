"""How well a detector separates fakes from reals: AUC, bootstrap intervals, the per-slice breakdown.

Pure numpy (no Ray, no I/O, no torch): ``dflray evaluate`` scores the test videos' face crops with its
reference detector and hands the scores here.

- ``auc``: the ROC AUC as the Mann-Whitney statistic (the chance that a random fake scores above a random
  real, ties counting one half), optionally with sample weights.
- ``video_scores``: video-level scores, the mean of each video's frame scores.
- ``bootstrap_auc``: a seeded percentile interval that resamples **videos** (with replacement, reals and
  fakes separately, so every replicate has both classes); at frame level a drawn video brings all its
  frames, since frames of one video are not independent.
- ``breakdown``: the table of ``dflray evaluate``: frame- and video-level AUC with intervals over the whole
  test set and per slice, by method, compression level, perturbation kind and quality bucket (terciles
  of ``swap_success``, see ``quality_buckets``).

**What a slice compares.** Compression level and perturbation are attributes of reals and fakes alike: a
slice holds the reals *and* the fakes that have it (c40 fakes against c40 reals; a video counts in each
distortion kind of its mix). Method and swap quality are attributes of fakes only: a slice holds its fakes
and **all** the test reals. The ``reals`` column of a row says which (``slice`` or ``all``).

Example:
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["QUALITY_BUCKETS", "VideoResult", "auc", "bootstrap_auc", "breakdown", "quality_buckets",
           "video_scores"]

QUALITY_BUCKETS = ("low", "mid", "high")
UNMEASURED = "unmeasured"
# Bootstrap replicates are computed in chunks of at most this many (replicate, sample) weights.
_CHUNK = 4_000_000


def _weighted_auc(value_idx: np.ndarray, n_values: int, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each row of ``weights`` (R, N) over samples whose score ranks are ``value_idx`` (N,).

    Per distinct score g (ascending): real weight R_g and fake weight F_g; a fake beats the reals below it
    and ties with the reals at its own score: AUC = Σ_g F_g (Σ_{h<g} R_h + R_g / 2) / (ΣF · ΣR).
    """
    rows = weights.shape[0]
    offset = (np.arange(rows)[:, None] * n_values + value_idx[None, :]).ravel()
    fake = np.bincount(offset, weights=(weights * labels[None, :]).ravel(), minlength=rows * n_values)
    real = np.bincount(offset, weights=(weights * (1 - labels)[None, :]).ravel(), minlength=rows * n_values)
    fake, real = fake.reshape(rows, n_values), real.reshape(rows, n_values)
    below = np.cumsum(real, axis=1) - real
    den = fake.sum(1) * real.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (fake * (below + 0.5 * real)).sum(1) / den, np.nan)


def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (REAL) or 1 (FAKE)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.float64), s


def auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None) -> float:
    """ROC AUC of scores against 0/1 labels (1 = FAKE): P(fake score > real score) + P(tie) / 2.

    Args:
        labels: 0 (REAL) or 1 (FAKE) per sample.
        scores: the detector's score per sample (higher = more likely fake).
        weights: optional non-negative weight per sample (a bootstrap's multiplicities).

    Returns:
        The AUC in [0, 1]; NaN when one class is absent.

    Example:
        >>> auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9])  # the tie at 0.2 counts one half
        0.875
    """
    y, s = _check(labels, scores)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != s.shape:
        raise ValueError("weights must have the scores' shape")
    uniq, idx = np.unique(s, return_inverse=True)
    return float(_weighted_auc(idx, len(uniq), y, w[None, :])[0])


def video_scores(video_ids: Sequence[str] | np.ndarray,
                 scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Video-level scores: the mean of each video's frame scores.

    Returns:
        (the video ids, sorted; their mean scores).

    Example:
        >>> video_scores(["b", "a", "b"], [0.2, 0.5, 0.4])
        (array(['a', 'b'], dtype='<U1'), array([0.5, 0.3]))
    """
    ids, inv = np.unique(np.asarray(video_ids), return_inverse=True)
    s = np.asarray(scores, dtype=np.float64)
    return ids, np.bincount(inv, weights=s, minlength=len(ids)) / np.bincount(inv, minlength=len(ids))


def bootstrap_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                  groups: Sequence[Any] | np.ndarray | None = None, *, n_boot: int = 1000,
                  confidence: float = 0.95, seed: int | Sequence[int] = 0) -> tuple[float, float, float]:
    """The AUC and a seeded bootstrap percentile interval, resampling groups (videos) per class.

    Each replicate draws as many real groups as there are, with replacement, and as many fake groups;
    a drawn group brings all its samples (its weight is how often it was drawn). The interval is the
    percentile interval of the replicates, widened to contain the point estimate where a skewed
    bootstrap distribution (a slice of a handful of videos) leaves it outside. With a single group in a
    class every replicate is the sample itself and shows no spread: the interval is then the whole [0, 1].

    Args:
        labels: 0/1 per sample; constant within a group.
        scores: score per sample.
        groups: the group (video) of each sample; None: each sample is its own group.
        n_boot: replicates.
        confidence: the interval's coverage, e.g. 0.95.
        seed: the replicates' seed (an int or a sequence of ints, as ``numpy.random.default_rng`` takes).

    Returns:
        (auc, lo, hi); all NaN when one class is absent.

    Raises:
        ValueError: for mismatched inputs, a group holding both labels, ``n_boot`` < 1 or ``confidence``
            outside (0, 1).
    """
    y, s = _check(labels, scores)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    g = np.arange(len(s)) if groups is None else np.asarray(groups)
    if g.shape != s.shape:
        raise ValueError("groups must have the scores' shape")
    _, gidx = np.unique(g, return_inverse=True)
    n_groups = int(gidx.max()) + 1 if len(gidx) else 0
    glabel = np.zeros(n_groups)
    glabel[gidx] = y
    if len(gidx) and not np.array_equal(glabel[gidx], y):
        raise ValueError("a group holds both REAL and FAKE samples")
    reals, fakes = np.flatnonzero(glabel == 0), np.flatnonzero(glabel == 1)
    if not len(reals) or not len(fakes):
        return float("nan"), float("nan"), float("nan")
    uniq, vidx = np.unique(s, return_inverse=True)
    point = float(_weighted_auc(vidx, len(uniq), y, np.ones((1, len(s))))[0])
    if len(reals) < 2 or len(fakes) < 2:
        return point, 0.0, 1.0
    rng = np.random.default_rng(seed)
    reps = []
    chunk = max(1, min(n_boot, _CHUNK // max(1, len(s))))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        drawn = np.concatenate([reals[rng.integers(0, len(reals), (rows, len(reals)))],
                                fakes[rng.integers(0, len(fakes), (rows, len(fakes)))]], axis=1)
        offset = (np.arange(rows)[:, None] * n_groups + drawn).ravel()
        counts = np.bincount(offset, minlength=rows * n_groups).reshape(rows, n_groups).astype(np.float64)
        reps.append(_weighted_auc(vidx, len(uniq), y, counts[:, gidx]))
    a = (1 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(reps), [a, 1 - a])
    return point, float(min(lo, point)), float(max(hi, point))


def quality_buckets(values: Sequence[float | None] | np.ndarray) -> list[str]:
    """The tercile of each fake's ``swap_success``: ``low``, ``mid`` or ``high`` (``unmeasured`` for None/NaN).

    Terciles by rank among the measured values: a value's bucket is that of its mean rank, so equal values
    always share a bucket (all equal: all ``mid``).

    Example:
        >>> quality_buckets([0.1, 0.9, None, 0.5, 0.5, 0.2, 1.0])
        ['low', 'high', 'unmeasured', 'mid', 'mid', 'low', 'high']
    """
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    ok = np.isfinite(v)
    out = [UNMEASURED] * len(v)
    if ok.any():
        ranks = rankdata(v[ok], method="average")
        terc = np.minimum(2, np.floor(3 * (ranks - 0.5) / ok.sum())).astype(int)
        for i, t in zip(np.flatnonzero(ok), terc):
            out[i] = QUALITY_BUCKETS[t]
    return out


@dataclass(frozen=True)
class VideoResult:
    """One scored test video.

    Attributes:
        video_id: its index ``video_id``.
        label: 1 FAKE, 0 REAL.
        frame_scores: the detector's score of each of its face crops.
        method: FAKE: the manipulation method (None for reals).
        compression: its compression level.
        perturbations: the distortion kinds it carries (``("none",)`` for none).
        swap_success: FAKE: the swap's quality headline (None/NaN: unmeasured; None for reals).
    """

    video_id: str
    label: int
    frame_scores: np.ndarray
    method: str | None = None
    compression: str | None = None
    perturbations: tuple[str, ...] = ("none",)
    swap_success: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def score(self) -> float:
        """The video-level score: the mean of its frame scores."""
        return float(np.mean(self.frame_scores))


def _slices(videos: list[VideoResult]) -> list[tuple[str, str, str, list[int], str]]:
    """(slice, value, reals, member indices, note) of the whole set and of each slice with a fake in it."""
    reals = [i for i, v in enumerate(videos) if v.label == 0]
    fakes = [i for i, v in enumerate(videos) if v.label == 1]
    out = [("all", "all", "slice", list(range(len(videos))), "")]

    def values(key) -> list[str]:
        return sorted({k for i in fakes for k in key(videos[i])})

    for m in values(lambda v: [v.method or "unknown"]):
        out.append(("method", m, "all", [i for i in fakes if (videos[i].method or "unknown") == m] + reals, ""))
    for c in values(lambda v: [v.compression or "unknown"]):
        out.append(("compression", c, "slice",
                    [i for i, v in enumerate(videos) if (v.compression or "unknown") == c], ""))
    for p in values(lambda v: v.perturbations or ("none",)):
        out.append(("perturbation", p, "slice",
                    [i for i, v in enumerate(videos) if p in (v.perturbations or ("none",))], ""))
    buckets = quality_buckets([videos[i].swap_success for i in fakes])
    for b in (*QUALITY_BUCKETS, UNMEASURED):
        members = [i for i, q in zip(fakes, buckets) if q == b]
        if not members:
            continue
        ss = np.array([videos[i].swap_success for i in members], dtype=np.float64)
        note = f"swap_success {ss.min():.2f}–{ss.max():.2f}" if b != UNMEASURED else "swap_success not measured"
        out.append(("quality", b, "all", members + reals, note))
    return out


def breakdown(videos: Sequence[VideoResult], *, n_boot: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """Frame- and video-level AUC with bootstrap intervals over the whole set and per slice.

    Slices (see the module docstring for what each compares): ``all``; ``method`` and ``quality`` (the
    fakes of the slice against all reals; quality buckets are terciles of the fakes' ``swap_success``,
    ``unmeasured`` for fakes without one); ``compression`` and ``perturbation`` (the reals and fakes of the
    slice; a video with a mix of distortions is in each of its kinds). A slice is listed when it holds a
    fake; its AUC is NaN when it holds no real.

    Args:
        videos: the scored test videos.
        n_boot: bootstrap replicates per row.
        confidence: the intervals' coverage.
        seed: the bootstrap seed (each row draws from its own stream derived from it and the row's name,
            so a row's interval does not depend on which other slices exist).

    Returns:
        One dict per (level, slice, value): ``level`` (``frame`` | ``video``), ``slice``, ``value``, ``reals``
        (``slice`` | ``all``), ``auc``, ``auc_lo``, ``auc_hi``, ``n_real``, ``n_fake`` (videos),
        ``n_real_frames``, ``n_fake_frames``, ``note``.
    """
    videos = list(videos)
    rows = []
    for slice_name, value, reals_of, members, note in _slices(videos):
        sub = [videos[i] for i in members]
        labels = np.array([v.label for v in sub], dtype=np.int64)
        counts = {"n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
                  "n_real_frames": int(sum(len(v.frame_scores) for v in sub if v.label == 0)),
                  "n_fake_frames": int(sum(len(v.frame_scores) for v in sub if v.label == 1))}
        for level in ("frame", "video"):
            if level == "frame":
                y = np.concatenate([np.full(len(v.frame_scores), v.label) for v in sub]) if sub else np.zeros(0)
                s = np.concatenate([np.asarray(v.frame_scores, np.float64) for v in sub]) if sub else np.zeros(0)
                g = np.concatenate([np.full(len(v.frame_scores), k) for k, v in enumerate(sub)]) if sub else None
            else:
                y, s, g = labels, np.array([v.score for v in sub]), None
            stream = zlib.crc32(f"{level}/{slice_name}/{value}".encode())
            a, lo, hi = bootstrap_auc(y, s, g, n_boot=n_boot, confidence=confidence, seed=[seed, stream])
            few = "one video of a class: no interval" if min(counts["n_real"], counts["n_fake"]) == 1 else ""
            rows.append({"level": level, "slice": slice_name, "value": value, "reals": reals_of,
                         "auc": a, "auc_lo": lo, "auc_hi": hi, **counts,
                         "note": "; ".join(x for x in (note, few) if x)})
    return rows
