"""Forgery dataset generation: a plan of real videos in, a labelled, measured, reported dataset out.

Modules: ``plan`` (manifest, identities, identity-disjoint splits, pairing), ``layout`` (where each
published video goes: flat, DFDC or FaceForensics++ structure; metadata.json), ``perturb``
(DeeperForensics-1.0 distortions and FF++ compression levels), ``report`` (the HTML report),
``stages`` (the job's stages on Ray: extract, identities, plan, train, merge, quality, publish, index)
and ``pipeline`` (``run_generate``, the Ray job that runs them all, resumably). The quality metrics and
gates it applies live in the shared ``dflray.quality`` layer, which the merge stage measures with too.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names, imported on first use: ``dflray.dataset.plan``, ``layout``, ``perturb`` and ``report`` stay
# free of Ray and torch for whoever imports only them.
_EXPORTS = {"GenerateSummary": "pipeline", "run_generate": "pipeline", "sweep_temporaries": "pipeline",
            "DatasetPlan": "stages", "Identities": "stages", "MergeTask": "stages", "PublishTask": "stages",
            "QualityTask": "stages"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
