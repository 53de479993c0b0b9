"""Evaluation: zero-shot one-vs-rest AUROC on pathologist labels, and text↔expression recall@k.

Protocol (SpotWhisperer): for each held-out section with labels, every class present is scored
one-vs-rest over the labelled spots (``undetermined`` and unlabelled spots are left out); the
section's overall AUROC is the mean over classes weighted by class size; figures over several
patients are reported as mean and standard error of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .. import keys
from ..prompts import Vocabulary
from .baselines import chance_scores, marker_gene_scores
from .model import TextExpressionModel
from .transcriptome_zeroshot import score

#: methods :func:`evaluate_section` reports, in table order
METHODS = ("model", "model_similarity", "marker_log1p", "marker_zscore", "random")


def auroc_table(scores: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest AUROC per class: columns ``class``, ``n_pos``, ``n``, ``auroc`` (NaN when undefined)."""
    labels = np.asarray(labels, dtype=str)
    rows = []
    for j, c in enumerate(classes):
        y = labels == c
        s = scores[:, j]
        ok = np.isfinite(s)
        defined = 0 < y[ok].sum() < ok.sum()
        rows.append(
            {"class": c, "n_pos": int(y.sum()), "n": int(len(y)), "auroc": roc_auc_score(y[ok], s[ok]) if defined else np.nan}
        )
    return pd.DataFrame(rows)


def weighted_overall(table: pd.DataFrame) -> float:
    """Mean AUROC over classes weighted by class size (classes with an undefined AUROC are skipped)."""
    t = table.dropna(subset=["auroc"])
    return float(np.average(t["auroc"], weights=t["n_pos"])) if len(t) and t["n_pos"].sum() else float("nan")


def evaluate_section(
    adata: ad.AnnData,
    model: TextExpressionModel,
    classes: Sequence[str],
    *,
    vocabulary: Vocabulary | None = None,
    score_kind: str = "probability",
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (section, patient, method, class, n_pos, n, auroc) for one labelled section.

    The model is scored on all spots of ``adata`` (per-section standardisation sees the whole
    section), then AUROC is computed over spots whose label is one of ``classes``.
    """
    labels = adata.obs[keys.LABEL].astype(str).to_numpy()
    keep = np.isin(labels, list(classes))
    res = score(adata, list(classes), model, vocabulary=vocabulary)
    method_scores = {
        "model": res.probabilities if score_kind == "probability" else res.similarity,
        "model_similarity": res.similarity,
        "marker_log1p": marker_gene_scores(adata, classes, vocabulary=vocabulary, mode="log1p"),
        "marker_zscore": marker_gene_scores(adata, classes, vocabulary=vocabulary, mode="zscore"),
        "random": chance_scores(adata.n_obs, len(classes), seed=seed),
    }
    section = str(adata.obs[keys.SECTION].iloc[0]) if keys.SECTION in adata.obs else ""
    patient = str(adata.obs[keys.PATIENT].iloc[0]) if keys.PATIENT in adata.obs else ""
    frames = []
    for method, s in method_scores.items():
        t = auroc_table(s[keep], labels[keep], classes)
        t.insert(0, "method", method)
        frames.append(t)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "patient", patient)
    out.insert(0, "section", section)
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Class × method table of ``mean (SEM)`` AUROC over sections, plus a weighted ``overall`` row."""
    overall = (
        results.groupby(["section", "method"])[["n_pos", "auroc"]]
        .apply(lambda t: weighted_overall(t.assign(**{"class": ""})))
        .rename("auroc")
        .reset_index()
        .assign(**{"class": "overall (weighted)"})
    )
    both = pd.concat([results[["section", "method", "class", "auroc"]], overall], ignore_index=True)

    def fmt(v: pd.Series) -> str:
        v = v.dropna()
        if v.empty:
            return "–"
        sem = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
        return f"{v.mean():.3f} ({sem:.3f}) n={len(v)}"

    table = both.groupby(["class", "method"], sort=False)["auroc"].apply(fmt).unstack("method")
    cols = [m for m in METHODS if m in table.columns] + [m for m in table.columns if m not in METHODS]
    return table[cols]


def recall_at_k(
    spot_emb: np.ndarray, text_emb: np.ndarray, spot_captions: Sequence[np.ndarray], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Retrieval recall@k between spots ``(n, D)`` and unique captions ``(U, D)`` (both normalised).

    ``text→spot``: for each caption, is one of its spots among the ``k`` most similar spots;
    ``spot→text``: for each spot, is one of its captions among the ``k`` most similar captions.
    Also returns the chance levels of both directions (``k`` random picks).
    """
    sim = spot_emb @ text_emb.T  # (n, U)
    n, u = sim.shape
    owner = np.zeros((n, u), dtype=bool)
    for i, caps in enumerate(spot_captions):
        owner[i, caps] = True
    out: dict[str, float] = {}
    spot_rank = np.argsort(-sim, axis=0)  # per caption, spots best first
    text_rank = np.argsort(-sim, axis=1)  # per spot, captions best first
    has = owner.any(axis=0)
    for k in ks:
        hit_t = owner[spot_rank[:k], np.arange(u)[None, :]].any(axis=0)
        hit_s = owner[np.arange(n)[:, None], text_rank[:, :k]].any(axis=1)
        out[f"text_to_spot@{k}"] = float(hit_t[has].mean())
        out[f"spot_to_text@{k}"] = float(hit_s.mean())
        pos_t, pos_s = owner.sum(axis=0)[has], owner.sum(axis=1)
        out[f"text_to_spot@{k}_chance"] = float(np.mean(1 - _none_hit(n, pos_t, k)))
        out[f"spot_to_text@{k}_chance"] = float(np.mean(1 - _none_hit(u, pos_s, k)))
    return out


def _none_hit(total: int, positives: np.ndarray, k: int) -> np.ndarray:
    """Probability that ``k`` draws without replacement from ``total`` items miss all ``positives``."""
    p = np.ones(len(positives))
    for i in range(min(k, total)):
        p *= np.clip((total - positives - i) / (total - i), 0, 1)
    return p
