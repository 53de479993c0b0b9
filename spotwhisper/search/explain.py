"""Why a region matched: the genes and proteins that set it apart from the rest of the slide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Explanation:
    """Top genes and proteins of a spot set versus the rest; tables sorted by effect, strongest first."""

    genes: pd.DataFrame
    proteins: pd.DataFrame | None
    n_in: int
    n_out: int

    def sentence(self, n: int = 5) -> str:
        """One line in words, e.g. "higher CD3E (+1.2), MS4A1 (+0.9) …; proteins CD3e (+0.31) …"."""
        up = self.genes[self.genes["diff"] > 0].head(n)
        parts = ["higher " + ", ".join(f"{g} (+{d:.2f})" for g, d in zip(up["name"], up["diff"]))] if len(up) else []
        if self.proteins is not None and len(self.proteins):
            pu = self.proteins[self.proteins["diff"] > 0].head(n)
            if len(pu):
                parts.append("proteins " + ", ".join(f"{g} (+{d:.2f})" for g, d in zip(pu["name"], pu["diff"])))
        return "; ".join(parts) if parts else "no gene or protein stands out"


def contrast_table(values: np.ndarray, names: Sequence[str], inside: np.ndarray) -> pd.DataFrame:
    """Mean in vs out, difference and Welch t per column of ``values`` ``(n, m)``; sorted by t.

    The rest-of-slide statistics come from whole-slide sums minus the selection, so no copy of the
    (large) unselected part is made; all-NaN columns (markers without a proxy) are dropped.
    """
    inside = np.asarray(inside, dtype=bool)
    keep = np.isfinite(values).any(axis=0)
    if not keep.all():
        values, names = values[:, keep], [n for n, k in zip(names, keep) if k]
    values = np.nan_to_num(values.astype(np.float64, copy=False)) if np.isnan(values).any() else values
    a = values[inside].astype(np.float64)
    n_a, n_b = len(a), len(values) - len(a)
    total = values.sum(0, dtype=np.float64)
    total_sq = np.einsum("ij,ij->j", values, values, dtype=np.float64)
    sum_a, sq_a = a.sum(0), (a * a).sum(0)
    ma = sum_a / max(n_a, 1)
    mb = (total - sum_a) / max(n_b, 1)
    va = (sq_a - n_a * ma**2) / max(n_a - 1, 1)
    vb = (total_sq - sq_a - n_b * mb**2) / max(n_b - 1, 1)
    se = np.sqrt(np.clip(va, 0, None) / max(n_a, 1) + np.clip(vb, 0, None) / max(n_b, 1)) + 1e-9
    t = (ma - mb) / se
    table = pd.DataFrame({"name": list(names), "mean_in": ma, "mean_out": mb, "diff": ma - mb, "t": t})
    return table.sort_values("t", ascending=False, ignore_index=True)


def _rank(table: pd.DataFrame, top: int, min_t: float) -> pd.DataFrame:
    """Top ``top`` up and down by difference among rows with ``|t| >= min_t`` (by ``t`` when fewer)."""
    up = table[table["t"] >= min_t].sort_values("diff", ascending=False)
    down = table[table["t"] <= -min_t].sort_values("diff")
    if len(up) < top:
        up = pd.concat([up, table[(table["t"] < min_t) & (table["diff"] > 0)].sort_values("t", ascending=False)])
    return pd.concat([up.head(top), down.head(top)]).drop_duplicates("name").reset_index(drop=True)


def explain_spots(
    inside: np.ndarray,
    expression: np.ndarray,
    genes: Sequence[str],
    proteins: np.ndarray | None = None,
    markers: Sequence[str] | None = None,
    top: int = 15,
    min_t: float = 3.0,
) -> Explanation:
    """Contrast the spots in ``inside`` (bool mask ``(n,)``) with the rest of the slide.

    ``expression`` ``(n, g)`` is log1p expression (inferred or measured) of ``genes``;
    ``proteins`` ``(n, 50)`` the virtual panel with ``markers`` names. As in differential
    expression, genes and proteins with ``|t| >= min_t`` are ranked by their difference (log1p
    units / scaled level), ``top`` up and ``top`` down; with too few such genes, by ``t``.
    """
    inside = np.asarray(inside, dtype=bool)
    if not inside.any():
        raise ValueError("no spot selected to explain")
    g = _rank(contrast_table(expression, genes, inside), top, min_t)
    p = None
    if proteins is not None and markers is not None:
        p = _rank(contrast_table(proteins, markers, inside), top, min_t)
        p = p[p["diff"] > 0].reset_index(drop=True) if (p["diff"] > 0).any() else p
    return Explanation(g.reset_index(drop=True), p, int(inside.sum()), int((~inside).sum()))
