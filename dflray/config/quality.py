"""Quality metrics of the fakes and gates on them (``dflray generate``'s quality stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflray.config._base import _check

# swap_success, the headline (share of sampled frames whose swapped face reads as the source person), leads:
# reports and tables list the metrics in this order.
QUALITY_METRICS = ("swap_success", "id_distance_source", "id_distance_target", "pose_error", "expression_error",
                   "flicker", "seam", "detail")


@dataclass(frozen=True)
class QualityGate:
    """One bound on a quality metric.

    Attributes:
        metric: one of ``QUALITY_METRICS``.
        max: the metric must be at most this.
        min: the metric must be at least this.
        methods: the forgery methods (``methods[].name``; the plan's model is its ``arch``, e.g. ``liae``)
            whose fakes the gate applies to; empty: every fake. E.g. identity gates for the swaps only, since
            an ``sbi`` fake keeps the target's identity by design.
    """

    metric: str
    max: float | None = None
    min: float | None = None
    methods: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.metric in QUALITY_METRICS, "metric", f"must be one of {', '.join(QUALITY_METRICS)}")
        _check(self.max is not None or self.min is not None, self.metric, "give max or min")


@dataclass(frozen=True)
class QualityConfig:
    """Quality metrics of every fake, and gates on them.

    Attributes:
        sample_frames: frames per fake (evenly spaced among those with a swap) the identity, pose and
            expression metrics are measured on; flicker and seam use every frame.
        gates: bounds; a fake outside one fails it.
        action: ``flag`` (kept, ``quality_pass=false`` and the reasons in the index) or ``drop``
            (left out of the published videos and metadata.json; its index row says why).
    """

    sample_frames: int = 8
    gates: tuple[QualityGate, ...] = ()
    action: Literal["flag", "drop"] = "flag"

    def __post_init__(self) -> None:
        _check(1 <= self.sample_frames <= 1000, "sample_frames", "must be in 1..1000")
