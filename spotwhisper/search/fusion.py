"""Make route scores comparable and fuse them.

Raw scores live on different scales (cosine in two embedding spaces, protein levels in [0, 1]).
``zscore`` standardises each route's scores over the spots being searched; ``rank`` maps them to
quantiles in [0, 1]. The fused score is the weighted mean of calibrated route scores over the
routes that answered the query.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata

CALIBRATIONS = ("zscore", "rank", "none")


def calibrate(scores: np.ndarray, method: str = "zscore") -> np.ndarray:
    """Calibrate ``(n,)`` scores over the searched spots (NaN stays NaN)."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    out = np.full_like(s, np.nan)
    if not ok.any():
        return out
    if method == "zscore":
        sd = s[ok].std()
        out[ok] = (s[ok] - s[ok].mean()) / (sd if sd > 0 else 1.0)
    elif method == "rank":
        out[ok] = (rankdata(s[ok]) - 0.5) / ok.sum()
    elif method == "none":
        out[ok] = s[ok]
    else:
        raise ValueError(f"unknown calibration {method!r}; choose from {CALIBRATIONS}")
    return out


def fuse(route_scores: Mapping[str, np.ndarray], weights: Mapping[str, float], method: str = "zscore") -> np.ndarray:
    """Weighted mean of calibrated scores of the routes present in ``route_scores`` → ``(n,)``.

    Routes with weight 0 or without scores are skipped; spots where a route is NaN use the others.
    """
    used = {r: s for r, s in route_scores.items() if s is not None and weights.get(r, 0) > 0}
    if not used:
        raise ValueError(f"no route to fuse (have {sorted(route_scores)}, weights {dict(weights)})")
    n = len(next(iter(used.values())))
    num = np.zeros(n)
    den = np.zeros(n)
    for r, s in used.items():
        c = calibrate(s, method)
        ok = np.isfinite(c)
        num[ok] += weights[r] * c[ok]
        den[ok] += weights[r]
    with np.errstate(invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
