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
    """Mean in vs out, difference and Welch t per column of ``values`` ``(n, m)``; sorted by t."""
    inside = np.asarray(inside, dtype=bool)
    keep = np.isfinite(values).any(axis=0)  # markers without a proxy are all-NaN
    values, names = values[:, keep], [n for n, k in zip(names, keep) if k]
    a, b = values[inside], values[~inside]
    ma, mb = np.nanmean(a, 0), np.nanmean(b, 0) if len(b) else np.zeros(values.shape[1])
    va = np.nanvar(a, 0, ddof=1) if len(a) > 1 else np.zeros(values.shape[1])
    vb = np.nanvar(b, 0, ddof=1) if len(b) > 1 else np.zeros(values.shape[1])
    se = np.sqrt(va / max(len(a), 1) + vb / max(len(b), 1)) + 1e-9
    t = (ma - mb) / se
    table = pd.DataFrame({"name": list(names), "mean_in": ma, "mean_out": mb, "diff": ma - mb, "t": t})
    return table.dropna(subset=["t"]).sort_values("t", ascending=False, ignore_index=True)


def explain_spots(
    inside: np.ndarray,
    expression: np.ndarray,
    genes: Sequence[str],
    proteins: np.ndarray | None = None,
    markers: Sequence[str] | None = None,
    top: int = 15,
) -> Explanation:
    """Contrast the spots in ``inside`` (bool mask ``(n,)``) with the rest of the slide.

    ``expression`` ``(n, g)`` is log1p expression (inferred or measured) of ``genes``;
    ``proteins`` ``(n, 50)`` the virtual panel with ``markers`` names. Only genes with a
    positive difference and the strongest negative ones are kept (``top`` each way).
    """
    inside = np.asarray(inside, dtype=bool)
    if not inside.any():
        raise ValueError("no spot selected to explain")
    g = contrast_table(expression, genes, inside)
    g = pd.concat([g.head(top), g.tail(top)]).drop_duplicates("name")
    p = None
    if proteins is not None and markers is not None:
        p = contrast_table(proteins, markers, inside).head(top)
    return Explanation(g.reset_index(drop=True), p, int(inside.sum()), int((~inside).sum()))
