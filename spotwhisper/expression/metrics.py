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
