"""Which source face each destination face takes, frame after frame, without flicker."""

from __future__ import annotations

import numpy as np

# How many recent picks are remembered: a video with several faces calls a method with their crops
# interleaved, so each face's previous pick must survive the other faces' picks in between.
RECENT = 4


class StickyPicks:
    """The nearest source face for each destination face, in frame order, except that a recent pick is
    kept while it is among the ``candidates`` nearest and no more than ``switch_margin`` farther (relative)
    than the nearest: near-equal source faces do not alternate from frame to frame.

    Example:
        >>> picks = StickyPicks(candidates=2, switch_margin=0.2)
        >>> picks.select(np.array([[1.0, 2.0], [1.1, 1.0]])).tolist()  # the second keeps the first's pick
        [0, 0]
    """

    def __init__(self, candidates: int, switch_margin: float):
        self.candidates = candidates
        self.switch_margin = switch_margin
        self.recent: list[int] = []

    def select(self, dist: np.ndarray) -> np.ndarray:
        """Picks for the rows of ``dist`` (``N×M`` distances of N destination faces to M source faces), in
        order; remembers them for the next call."""
        k = min(self.candidates, dist.shape[1])
        picks = np.empty(len(dist), np.int64)
        for i, d in enumerate(dist):
            pick = int(np.argmin(d))
            if k > 1 and self.recent:
                near = set(np.argpartition(d, k - 1)[:k].tolist())
                limit = d[pick] * (1.0 + self.switch_margin)
                pick = next((p for p in self.recent if p in near and d[p] <= limit), pick)
            picks[i] = pick
            self.recent = [pick] + [p for p in self.recent if p != pick][:RECENT - 1]
        return picks
