"""Zero-shot metrics (SpotWhisperer protocol): one-vs-rest AUROC per class and sample, mean (SEM)
over samples, an overall figure weighted by class size, and bootstrap confidence intervals.

* Per sample and class: ``roc_auc_score`` of the class query's score, positives = the class's
  spots, negatives = the other evaluated spots of the sample (undefined — NaN — when the class is
  absent from the sample, has fewer spots than the task's ``min_class_spots``, or every spot
  belongs to it; spots whose score is NaN are left out).
* Per sample, overall: mean of its class AUROCs weighted by class size (``n_pos``).
* Over samples: mean and standard error of the mean (``std(ddof=1) / sqrt(k)``; 0 for one sample)
  of the samples where the AUROC is defined.
* Bootstrap: every sample's evaluated spots are resampled with replacement (the same draws for
  every route, so routes stay paired); each replicate recomputes class AUROCs, the weighted
  overall per sample and their means over samples; the interval is the percentile interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..language.evaluate import auroc_table, weighted_overall

OVERALL = "overall (weighted)"

__all__ = [
    "OVERALL",
    "auroc_table",
    "bootstrap_intervals",
    "mean_sem",
    "sample_overall",
    "summarize_long",
    "weighted_auroc",
    "weighted_overall",
]


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, SEM, k)`` of the finite values (SEM 0 for one value; NaNs for none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), sem, int(v.size)


def sample_overall(long: pd.DataFrame) -> pd.DataFrame:
    """Per (sample, route) overall AUROC weighted by class size: columns sample, route, auroc, n_pos."""
    rows = []
    for (sample, route), t in long.groupby(["sample", "route"], sort=False):
        rows.append({"sample": sample, "route": route, "auroc": weighted_overall(t),
                     "n_pos": int(t.dropna(subset=["auroc"])["n_pos"].sum())})
    return pd.DataFrame(rows, columns=["sample", "route", "auroc", "n_pos"])


def summarize_long(long: pd.DataFrame) -> pd.DataFrame:
    """Long AUROC table (sample, route, class, n_pos, n, auroc) → one row per (route, class) plus an
    ``overall (weighted)`` row per route: mean, sem, n_samples, n_pos (positives summed over the
    samples where the class AUROC is defined)."""
    rows = []
    for (route, cls), t in long.groupby(["route", "class"], sort=False):
        m, s, k = mean_sem(t["auroc"])
        rows.append({"route": route, "class": cls, "mean": m, "sem": s, "n_samples": k,
                     "n_pos": int(t.loc[t["auroc"].notna(), "n_pos"].sum())})
    for route, t in sample_overall(long).groupby("route", sort=False):
        m, s, k = mean_sem(t["auroc"])
        rows.append({"route": route, "class": OVERALL, "mean": m, "sem": s, "n_samples": k, "n_pos": int(t["n_pos"].sum())})
    return pd.DataFrame(rows, columns=["route", "class", "mean", "sem", "n_samples", "n_pos"])


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` ``(n,)`` for labels ``positive`` ``(n,)`` with per-spot multiplicities
    ``weights`` ``(B, n)`` (bootstrap counts) → ``(B,)``; ties count one half (as ``roc_auc_score``);
    NaN where a replicate has no positive or no negative. Spots with a NaN score must be removed first."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wp = np.add.reduceat(w * y, starts, axis=1)
    wn = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (wp * (below + 0.5 * wn)).sum(axis=1) / den, np.nan)


def _replicate_aurocs(scores: np.ndarray, classes: np.ndarray, names: Sequence[str], counts: np.ndarray,
                      min_pos: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate and class: AUROC ``(B, C)`` and positive count ``(B, C)`` on one sample (classes
    with fewer than ``min_pos`` spots in the sample are not scored)."""
    b = counts.shape[0]
    auc = np.full((b, len(names)), np.nan)
    npos = np.zeros((b, len(names)))
    for j, c in enumerate(names):
        y = classes == c
        ok = np.isfinite(scores[:, j])
        if y.sum() < min_pos or not y[ok].any() or y[ok].all():
            continue
        auc[:, j] = weighted_auroc(scores[ok, j], y[ok], counts[:, ok])
        npos[:, j] = counts[:, y & ok].sum(axis=1)
    return auc, npos


def bootstrap_intervals(
    samples: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    class_names: Sequence[str],
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
    min_pos: int = 1,
) -> pd.DataFrame:
    """Percentile intervals of the mean-over-samples AUROC per (route, class) and of the overall.

    ``samples[name] = (classes, {route: scores})``: the class of each evaluated spot ``(n,)`` and the
    route scores of those spots ``(n, C)`` (columns in ``class_names`` order). Returns columns
    route, class, lo, hi (NaN when no replicate is defined). Classes with fewer than ``min_pos`` spots in
    a sample are not scored there (as in the point estimate).
    """
    rng = np.random.default_rng(seed)
    per_route: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for classes, routes in samples.values():
        n = len(classes)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) if n else np.zeros((n_boot, 0))
        for route, scores in routes.items():
            per_route.setdefault(route, []).append(_replicate_aurocs(scores, np.asarray(classes), class_names, counts, min_pos))
    alpha = (1 - ci) / 2
    rows = []
    for route, parts in per_route.items():
        auc = np.stack([a for a, _ in parts])  # (S, B, C)
        npos = np.stack([p for _, p in parts])
        w = np.where(np.isfinite(auc), npos, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            overall = np.where(w.sum(axis=2) > 0, np.nansum(auc * w, axis=2) / w.sum(axis=2), np.nan)  # (S, B)
        stats = {c: _nanmean_over_samples(auc[:, :, j]) for j, c in enumerate(class_names)}
        stats[OVERALL] = _nanmean_over_samples(overall)
        for c, v in stats.items():
            v = v[np.isfinite(v)]
            lo, hi = (np.quantile(v, [alpha, 1 - alpha]) if v.size else (np.nan, np.nan))
            rows.append({"route": route, "class": c, "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows, columns=["route", "class", "lo", "hi"])


def _nanmean_over_samples(x: np.ndarray) -> np.ndarray:
    """``(S, B)`` → ``(B,)`` mean over samples of the finite values (NaN when none)."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(axis=0), np.where(ok, x, 0).sum(axis=0) / ok.sum(axis=0), np.nan)
