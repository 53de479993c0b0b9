"""Evaluation of predicted expression: per-gene Pearson, Moran's I, per-spot top-gene retrieval."""

from __future__ import annotations

import numpy as np
import scanpy as sc
from scipy import sparse
from scipy.spatial import cKDTree


def pearson_per_gene(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson r across spots for every gene, ``(n, g)`` × 2 → ``(g,)``; NaN where a side is constant."""
    p = pred - pred.mean(0)
    t = truth - truth.mean(0)
    denom = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / denom
    r[(np.ptp(pred, axis=0) == 0) | (np.ptp(truth, axis=0) == 0)] = np.nan  # constant: undefined
    return r


def spatial_graph(coords: np.ndarray, k: int = 6) -> sparse.csr_matrix:
    """Symmetric k-nearest-neighbour adjacency of spot coordinates ``(n, 2)``."""
    k = min(k, len(coords) - 1)
    _, idx = cKDTree(coords).query(coords, k=k + 1)
    rows = np.repeat(np.arange(len(coords)), k)
    g = sparse.csr_matrix((np.ones(rows.size), (rows, idx[:, 1:].ravel())), shape=(len(coords),) * 2)
    return ((g + g.T) > 0).astype(np.float64).tocsr()


def morans_i(values: np.ndarray, graph: sparse.csr_matrix) -> np.ndarray:
    """Moran's I of every column of ``values`` ``(n, g)`` on ``graph`` (scanpy) → ``(g,)``."""
    return np.asarray(sc.metrics.morans_i(graph, np.ascontiguousarray(values.T)))


def topk_retrieval(pred: np.ndarray, truth: np.ndarray, k: int = 20) -> float:
    """Mean over spots of |top-k over-expressed genes predicted ∩ measured| / k.

    "Over-expressed" = z-score against the section's gene means and stds, so a spot's top genes
    are those that distinguish it, not the always-high housekeeping genes.
    """
    def z(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(0)) / (a.std(0) + 1e-6)

    tp = np.argsort(-z(pred), axis=1)[:, :k]
    tt = np.argsort(-z(truth), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(tp, tt)]))


def evaluate_prediction(
    pred: np.ndarray, truth: np.ndarray, coords: np.ndarray, top_variable: int = 50, k: int = 20
) -> dict[str, float]:
    """Summary figures for one held-out section.

    ``pearson_all``: mean per-gene r over genes that vary; ``pearson_top``: over the
    ``top_variable`` most variable measured genes; ``morans_r``: Pearson between Moran's I of
    predicted and measured maps over those genes; ``morans_pred``/``morans_true``: their means;
    ``topk``: per-spot top-gene retrieval; ``mse``: mean squared error over all genes.
    """
    r = pearson_per_gene(pred, truth)
    var = truth.var(0)
    top = np.argsort(-var)[:top_variable]
    graph = spatial_graph(coords)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant maps (mean baseline) give NaN
        mi_pred = morans_i(pred[:, top], graph)
    mi_true = morans_i(truth[:, top], graph)
    ok = np.isfinite(mi_pred) & np.isfinite(mi_true)
    return {
        "pearson_all": float(np.nanmean(r)),
        "pearson_top": float(np.nanmean(r[top])),
        "morans_r": float(np.corrcoef(mi_pred[ok], mi_true[ok])[0, 1]) if ok.sum() > 2 else float("nan"),
        "morans_pred": float(np.nanmean(mi_pred)),
        "morans_true": float(np.nanmean(mi_true)),
        "topk": topk_retrieval(pred, truth, k),
        "mse": float(((pred - truth) ** 2).mean()),
    }


def interval_coverage(mean: np.ndarray, var: np.ndarray, truth: np.ndarray, level: float) -> float:
    """Fraction of measured values inside the central ``level`` Gaussian predictive interval
    ``mean ± z·sqrt(var)`` (all arrays ``(n, g)``, log1p scale)."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    return float((np.abs(truth - mean) <= z * np.sqrt(np.maximum(var, 0))).mean())


def within_gene_spearman(var: np.ndarray, err: np.ndarray) -> float:
    """Mean over genes of the Spearman correlation between predicted variance and squared error
    across spots (genes whose variance or error is constant are skipped). Unlike a correlation pooled
    over genes, a gene's average variance level cannot score here: only the ranking of spots counts."""
    from scipy.stats import rankdata

    ok = (np.ptp(var, axis=0) > 0) & (np.ptp(err, axis=0) > 0)
    if not ok.any():
        return float("nan")
    rv = rankdata(var[:, ok], axis=0)
    re = rankdata(err[:, ok], axis=0)
    rv -= rv.mean(0)
    re -= re.mean(0)
    rho = (rv * re).sum(0) / np.sqrt((rv**2).sum(0) * (re**2).sum(0))
    return float(np.mean(rho))


def uncertainty_figures(mean: np.ndarray, var: np.ndarray, truth: np.ndarray,
                        levels: tuple[float, ...] = (0.5, 0.9)) -> dict[str, float]:
    """``cov50``/``cov90`` (interval coverage per level) and ``unc_spearman_within`` for one section."""
    out = {f"cov{round(lv * 100)}": interval_coverage(mean, var, truth, lv) for lv in levels}
    out["unc_spearman_within"] = within_gene_spearman(var, (truth - mean) ** 2)
    return out
