"""Fuse the routes' relevance into one map: the weighted mean of the routes that answered.

Every route's relevance is on one scale (log-odds against the reference descriptions; protein
levels mapped onto it, see :mod:`spotwhisper.search.relevance`), so a weighted mean keeps it, and
the threshold means the same for one route and for several.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def fuse(route_scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean ``(n,)`` of the routes present in ``route_scores`` with weight > 0.

    Spots where a route is NaN use the others (NaN where none answers).
    """
    used = {r: np.asarray(s, dtype=np.float64) for r, s in route_scores.items() if s is not None and weights.get(r, 0) > 0}
    if not used:
        raise ValueError(f"no route to fuse (have {sorted(route_scores)}, weights {dict(weights)})")
    n = len(next(iter(used.values())))
    num = np.zeros(n)
    den = np.zeros(n)
    for r, s in used.items():
        ok = np.isfinite(s)
        num[ok] += weights[r] * s[ok]
        den[ok] += weights[r]
    with np.errstate(invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
