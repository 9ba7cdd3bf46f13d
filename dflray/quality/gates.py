"""Quality gates over a fake's metrics, and the ``swap_success`` summaries the job reports print.

Example:
    >>> from dflray.config import QualityConfig
    >>> apply_gates({"seam": 2.31, "swap_success": 0.9}, QualityConfig(gates=(QualityGate("seam", max=1.5),)).gates)
    (False, ['seam 2.31 > max 1.5'])
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dflray.config import QUALITY_METRICS, QualityGate

__all__ = ["apply_gates", "format_success", "success_stats"]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (
        isinstance(v, (np.floating, np.integer)) and math.isnan(float(v)))


def apply_gates(metrics: Mapping[str, float | None], gates: Sequence[QualityGate],
                method: str | None = None) -> tuple[bool, list[str]]:
    """Checks a fake's metrics against quality gates.

    Args:
        metrics: metric name → value (None or NaN: not measured).
        gates: the bounds (``QualityConfig.gates``); a gate with both ``min`` and ``max`` checks both.
        method: the fake's forgery method; a gate that lists ``methods`` skips fakes of any other
            (and fakes whose method is not known, None).

    Returns:
        ``(passed, reasons)``: one reason per failed bound, e.g. ``"seam 2.31 > max 1.5"``, or
        ``"pose_error not measured"`` for a gate on a metric that is missing, None or NaN.

    Raises:
        ValueError: for a gate on a metric outside ``QUALITY_METRICS``.

    Example:
        >>> apply_gates({"seam": 2.31}, [QualityGate("seam", max=1.5)])
        (False, ['seam 2.31 > max 1.5'])
    """
    reasons: list[str] = []
    for g in gates:
        if g.metric not in QUALITY_METRICS:
            raise ValueError(f"quality.gates: unknown metric {g.metric!r} (known: {', '.join(QUALITY_METRICS)})")
        if g.methods and method not in g.methods:
            continue
        v = metrics.get(g.metric)
        if _missing(v):
            reasons.append(f"{g.metric} not measured")
            continue
        v = float(v)
        if g.max is not None and v > g.max:
            reasons.append(f"{g.metric} {v:.3g} > max {g.max:g}")
        if g.min is not None and v < g.min:
            reasons.append(f"{g.metric} {v:.3g} < min {g.min:g}")
    return not reasons, reasons


def success_stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Distribution of ``swap_success`` over fakes (None and NaN are counted as unmeasured).

    Args:
        values: one ``swap_success`` per fake.

    Returns:
        ``n`` (measured fakes), ``unmeasured``, ``mean``, ``min``, ``q1``, ``median``, ``q3``, ``max``
        (None when nothing was measured), ``ge_50`` and ``ge_80`` (fakes with at least 0.5 and 0.8).

    Example:
        >>> s = success_stats([1.0, 0.5, 0.25, None])
        >>> s["n"], s["unmeasured"], s["mean"], s["ge_50"], s["ge_80"]
        (3, 1, 0.5833333333333334, 2, 1)
    """
    values = list(values)
    v = np.array([float(x) for x in values if not _missing(x)], np.float64)
    out: dict[str, Any] = {"n": int(v.size), "unmeasured": len(values) - int(v.size),
                           "ge_50": int((v >= 0.5).sum()), "ge_80": int((v >= 0.8).sum())}
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if v.size else [None] * 5
    out.update(mean=float(v.mean()) if v.size else None, **dict(zip(("min", "q1", "median", "q3", "max"), q)))
    return out


def format_success(stats: Mapping[str, Any]) -> str:
    """One line about a ``success_stats`` result, for the job summaries.

    Example:
        >>> format_success(success_stats([1.0, 0.5, 0.25, None]))  # doctest: +ELLIPSIS
        'swap_success mean 0.583 over 3 fakes (min 0.25, ..., max 1); ≥0.5: 2 (67%), ≥0.8: 1 (33%); 1 not measured'
    """
    n = stats["n"]
    if not n:
        return f"swap_success: not measured ({stats['unmeasured']} fakes without a value)"
    q = ", ".join(f"{k} {stats[k]:.3g}" for k in ("min", "q1", "median", "q3", "max"))
    line = (f"swap_success mean {stats['mean']:.3g} over {n} fake{'s' * (n != 1)} ({q}); ≥0.5: {stats['ge_50']} "
            f"({stats['ge_50'] / n:.0%}), ≥0.8: {stats['ge_80']} ({stats['ge_80'] / n:.0%})")
    return line + (f"; {stats['unmeasured']} not measured" if stats["unmeasured"] else "")
