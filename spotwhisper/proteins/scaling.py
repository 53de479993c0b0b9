"""Make raw protein levels comparable across markers: robust min–max or ranks, per slide."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def scale_levels(
    raw: np.ndarray,
    method: str = "minmax",
    clip_percentiles: tuple[float, float] | list[float] = (1.0, 99.0),
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Make raw levels ``(n, C)`` comparable across markers, separately within each group (slide).

    ``minmax``: robust min–max to [0, 1] (flat markers → 0); ``rank``: ranks to [0, 1];
    ``none``: unchanged. NaN stays NaN. Returns float32 ``(n, C)``.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if method == "none":
        return raw.astype(np.float32)
    if method not in {"minmax", "rank"}:
        raise ValueError(f"unknown scaling {method!r}; expected 'minmax', 'rank' or 'none'")
    out = np.full(raw.shape, np.nan)
    groups = np.zeros(len(raw), dtype=int) if groups is None else np.asarray(groups)
    lo_q, hi_q = clip_percentiles
    for g in pd.unique(groups):
        rows = np.flatnonzero(groups == g)
        block = raw[rows]
        for j in range(raw.shape[1]):
            v = block[:, j]
            ok = ~np.isnan(v)
            if not ok.any():
                continue
            if method == "rank":
                r = rankdata(v[ok])
                out[rows[ok], j] = (r - 1) / max(len(r) - 1, 1)
                continue
            lo, hi = np.percentile(v[ok], [lo_q, hi_q])
            out[rows[ok], j] = np.clip((v[ok] - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return out.astype(np.float32)
