"""Captions for spots, written from real annotations by rules you can read.

Each spot gets several short captions, each of one *kind*:

============  ==================================================================================
kind          from
============  ==================================================================================
``label``     the pathologist region label ("invasive cancer") in a few templates
``cluster``   the expression cluster's annotation with its evidence sentence (marker genes,
              enriched pathways) from ``res/ST-cluster/motivation.csv``
``deconv``    cell-type proportions in words ("dominated by epithelial cells with T cells")
``genes``     genes over-expressed in the spot against its section (Poisson tail of the count)
``tls``       the tertiary lymphoid structure signature score in words (high / moderate)
``markers``   vocabulary terms whose marker genes are high in the spot
``pbmc``      blood cell types (scanpy's bundled pbmc68k_reduced) whose marker genes are high
============  ==================================================================================

Label captions are the leak to guard: callers pass ``with_labels=False`` for held-out patients.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .. import keys
from ..genes import looks_like_counts
from ..prompts import Vocabulary
from .config import CaptionConfig, InputConfig
from .expression_encoder import log1p_panel, standardize

#: Cell-type names of the stereoscope major tier (her2st) in words.
CELL_TYPE_WORDS = {
    "B-cells": "B cells",
    "CAFs": "cancer-associated fibroblasts",
    "Endothelial": "endothelial cells",
    "Epithelial": "epithelial cells",
    "Myeloid": "myeloid cells",
    "Plasma Cells": "plasma cells",
    "PVL": "perivascular-like cells",
    "T-cells": "T cells",
}
KINDS = ("label", "cluster", "deconv", "genes", "tls", "markers", "pbmc")
UNINFORMATIVE = {"", "nan", "unknown", "undetermined", "none"}
_PATHWAY_LEAD = {"and", "enriched", "neriched", "pathways", "patwhays", "for", "related", "to", "include"}


@dataclass(frozen=True)
class Caption:
    """One caption of one spot."""

    kind: str
    text: str


def join_words(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def clean_annotation(text: str) -> str:
    """A cluster annotation in plain words: ``"cancer 1"`` → ``"cancer"``, ``"immune : B/plasma"`` → ``"immune: B/plasma"``."""
    text = re.sub(r"\s*:\s*", ": ", str(text).strip())
    return re.sub(r"(?<=[a-z])\s+\d+$", "", text)


def parse_evidence(text: str, max_pathways: int = 6) -> tuple[list[str], list[str]]:
    """Marker genes and enriched pathways named in a motivation.csv evidence sentence."""
    text = " ".join(str(text).split())
    if not text or text.lower() == "nan":
        return [], []
    m = re.search(r"\b(?:n?enriched|neriched|pathways)\b", text, flags=re.IGNORECASE)
    gene_part, path_part = (text[: m.start()], text[m.start() :]) if m else (text, "")
    gene_part = re.sub(r"^\s*marker genes include\s*:?\s*", "", gene_part, flags=re.IGNORECASE)
    genes = [g.replace("*", "").strip(" .;") for g in re.split(r",|\band\b|;", gene_part)]
    genes = [g for g in genes if g]
    words = path_part.split()
    while words and words[0].lower().strip(":") in _PATHWAY_LEAD:
        words.pop(0)
    pathways = [p.strip(" .") for p in re.split(r"[,;]", " ".join(words)) if p.strip(" .")]
    return genes, pathways[:max_pathways]


def cluster_captions(annotation: str, evidence: str, cfg: CaptionConfig) -> list[str]:
    """Captions of one expression cluster: its annotation, with marker genes, with pathways."""
    ann = clean_annotation(annotation)
    if ann.lower() in UNINFORMATIVE:
        return []
    genes, pathways = parse_evidence(evidence, cfg.max_pathways)
    out = [ann]
    if genes:
        out.append(f"{ann} with marker genes {join_words(genes)}")
    if pathways:
        out.append(f"{ann}, enriched for {join_words(pathways)}")
    return out


def deconvolution_caption(props: pd.Series, cfg: CaptionConfig) -> str | None:
    """Cell-type proportions (one spot, type → fraction) in words, or ``None`` when nothing stands out."""
    props = props.dropna().sort_values(ascending=False)
    if props.empty:
        return None
    named = [CELL_TYPE_WORDS.get(t, t) for t, v in props.items() if v >= cfg.present]
    if props.iloc[0] >= cfg.dominant:
        top = CELL_TYPE_WORDS.get(props.index[0], props.index[0])
        rest = named[1:]
        return f"dominated by {top}" + (f" with {join_words(rest)}" if rest else "")
    if len(named) >= 2:
        return f"a mix of {join_words(named)}"
    return None


def overexpression_score(counts: np.ndarray, totals: np.ndarray, groups: np.ndarray | None, min_expected: float) -> np.ndarray:
    """``(n, G)`` −log10 P(X ≥ k) of each spot's count ``k`` under a Poisson with the section's rate.

    The expected count is ``total_counts(spot) × share of the gene in the section``, floored at
    ``min_expected`` so that a rare gene seen once or twice does not look extreme (spots are sparse).
    Genes at or below their expected count score 0.
    """
    from scipy.stats import poisson

    groups = np.zeros(len(counts), dtype=int) if groups is None else groups
    expected = np.zeros_like(counts, dtype=np.float64)
    for g in np.unique(groups):
        rows = groups == g
        share = counts[rows].sum(axis=0) / max(totals[rows].sum(), 1.0)
        expected[rows] = totals[rows, None] * share[None, :]
    score = -poisson.logsf(counts - 1, np.maximum(expected, min_expected)) / np.log(10)
    score[counts <= expected] = 0.0
    return score.astype(np.float32)


def top_genes(score: np.ndarray, genes: Sequence[str], n_genes: int, min_score: float) -> list[list[str]]:
    """Per spot, up to ``n_genes`` genes with ``score ≥ min_score``, highest first."""
    k = min(n_genes, score.shape[1])
    top = np.argsort(-score, axis=1)[:, :k]
    return [[genes[j] for j in row if score[i, j] >= min_score] for i, row in enumerate(top)]


def signature_score(z: np.ndarray, genes: Sequence[str], weights: pd.Series) -> np.ndarray:
    """Weighted sum of z-scored expression over the signature genes present → ``(n,)``."""
    idx = {g: i for i, g in enumerate(genes)}
    common = [g for g in weights.index if g in idx]
    if not common:
        return np.zeros(len(z), dtype=np.float32)
    w = weights.loc[common].to_numpy(dtype=np.float32)
    return z[:, [idx[g] for g in common]] @ (w / np.abs(w).sum())


def caption_spots(
    adata: ad.AnnData,
    cfg: CaptionConfig,
    genes: Sequence[str],
    *,
    with_labels: bool | np.ndarray = True,
    tls_weights: pd.Series | None = None,
    vocabulary: Vocabulary | None = None,
) -> list[list[Caption]]:
    """Captions of every spot of ``adata`` (raw counts or ``layers["log1p"]``; obs as read by io).

    ``genes`` are the genes captions may name (the panel). ``with_labels`` — a bool or a per-spot
    bool mask — allows pathologist-label captions; pass ``False`` for held-out patients.
    Returns one list of :class:`Caption` per spot (possibly empty).
    """
    n = adata.n_obs
    obs = adata.obs
    out: list[list[Caption]] = [[] for _ in range(n)]
    allow = np.broadcast_to(np.asarray(with_labels, dtype=bool), (n,))

    if cfg.label and keys.LABEL in obs:
        for i, lab in enumerate(obs[keys.LABEL].astype(str)):
            if allow[i] and lab.lower() not in UNINFORMATIVE:
                out[i] += [Caption("label", t.format(lab)) for t in cfg.label_templates]

    if cfg.cluster and keys.CLUSTER_ANNOTATION in obs:
        ev = obs[keys.CLUSTER_EVIDENCE] if keys.CLUSTER_EVIDENCE in obs else pd.Series("", index=obs.index)
        memo: dict[tuple[str, str], list[str]] = {}
        for i, (ann, e) in enumerate(zip(obs[keys.CLUSTER_ANNOTATION].astype(str), ev.astype(str))):
            texts = memo.setdefault((ann, e), cluster_captions(ann, e, cfg))
            out[i] += [Caption("cluster", t) for t in texts]

    deconv_cols = [c for c in obs.columns if c.startswith(keys.DECONV_PREFIX)]
    if cfg.deconvolution and deconv_cols:
        props = obs[deconv_cols].rename(columns=lambda c: c[len(keys.DECONV_PREFIX) :])
        for i in range(n):
            text = deconvolution_caption(props.iloc[i], cfg)
            if text:
                out[i].append(Caption("deconv", text))

    need_expr = cfg.genes or cfg.markers or cfg.pbmc or (cfg.tls and tls_weights is not None)
    if need_expr:
        wanted = list(dict.fromkeys(list(genes) + (list(tls_weights.index) if tls_weights is not None else [])))
        wanted = [g for g in wanted if g in set(adata.var_names)]
        x, _ = log1p_panel(adata, wanted, InputConfig(min_overlap=0.0))
        groups = obs[keys.SECTION].astype(str).to_numpy() if keys.SECTION in obs else None
        z = standardize(x, groups, InputConfig(standardize="zscore", clip=1e6, min_std=1e-3))
        panel_cols = [i for i, g in enumerate(wanted) if g in set(genes)]
        panel_names = [wanted[i] for i in panel_cols]
        zp = z[:, panel_cols]
        if cfg.genes:
            _gene_captions(out, adata, panel_names, groups, cfg)
        if cfg.tls and tls_weights is not None:
            score = signature_score(z, wanted, tls_weights)
            hi, mid = np.quantile(score, [cfg.tls_high, cfg.tls_moderate])
            for i, s in enumerate(score):
                if s >= hi:
                    out[i].append(Caption("tls", "high tertiary lymphoid structure (TLS) signature score"))
                elif s >= mid:
                    out[i].append(Caption("tls", "moderate tertiary lymphoid structure (TLS) signature score"))
        if cfg.markers and vocabulary is not None:
            sigs = {t.name: list(t.genes) for t in vocabulary.terms.values()}
            _marker_captions(out, zp, panel_names, sigs, cfg)
        if cfg.pbmc:
            _marker_captions(out, zp, panel_names, pbmc_signatures(), cfg, "pbmc", "{} signature high ({})")
    return out


def _gene_captions(
    out: list[list[Caption]], adata: ad.AnnData, genes: Sequence[str], groups: np.ndarray | None, cfg: CaptionConfig
) -> None:
    if not looks_like_counts(adata.X):
        raise ValueError("gene captions need raw counts in X (to test over-expression against the section)")
    cols = [adata.var_names.get_loc(g) for g in genes]
    x = adata.X
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    sub = x[:, cols]
    counts = np.asarray(sub.toarray() if sparse.issparse(sub) else sub, dtype=np.float64)
    score = overexpression_score(counts, totals, groups, cfg.min_expected)
    for i, names in enumerate(top_genes(score, genes, cfg.n_genes, cfg.min_gene_score)):
        if names:
            out[i].append(Caption("genes", f"high expression of {join_words(names)}"))


def _marker_captions(
    out: list[list[Caption]],
    z: np.ndarray,
    genes: Sequence[str],
    signatures: dict[str, list[str]],
    cfg: CaptionConfig,
    kind: str = "markers",
    phrase: str = "{} marker genes high ({})",
) -> None:
    """Name every signature whose genes' mean z-score in a spot reaches ``cfg.marker_z``."""
    idx = {g: i for i, g in enumerate(genes)}
    for name, sig in signatures.items():
        cols = [idx[g] for g in sig if g in idx]
        if len(cols) < 2:
            continue
        score = z[:, cols].mean(axis=1)
        for i in np.flatnonzero(score >= cfg.marker_z):
            top = [genes[cols[j]] for j in np.argsort(-z[i, cols])[:3]]
            out[i].append(Caption(kind, phrase.format(name, join_words(top))))


#: pbmc68k ``bulk_labels`` in words
PBMC_WORDS = {
    "CD14+ Monocyte": "CD14+ monocytes",
    "CD19+ B": "CD19+ B cells",
    "CD34+": "CD34+ progenitor cells",
    "CD4+/CD25 T Reg": "regulatory T cells",
    "CD4+/CD45RA+/CD25- Naive T": "naive CD4+ T cells",
    "CD4+/CD45RO+ Memory": "memory CD4+ T cells",
    "CD56+ NK": "natural killer cells",
    "CD8+ Cytotoxic T": "cytotoxic CD8+ T cells",
    "CD8+/CD45RA+ Naive Cytotoxic": "naive CD8+ T cells",
    "Dendritic": "dendritic cells",
}


@lru_cache(maxsize=2)
def pbmc_signatures(n_genes: int = 10) -> dict[str, list[str]]:
    """Cell-type marker genes from scanpy's bundled pbmc68k_reduced (Wilcoxon, top ``n_genes`` per type)."""
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    sc.tl.rank_genes_groups(pbmc, "bulk_labels", method="wilcoxon", use_raw=True, n_genes=n_genes)
    names = pd.DataFrame(pbmc.uns[keys.RANK_GENES_GROUPS]["names"])
    return {PBMC_WORDS.get(c, c): [str(g) for g in names[c]] for c in names.columns}


def caption_table(captions: list[list[Caption]], index: Sequence[str]) -> pd.DataFrame:
    """Long table (spot, kind, caption) — handy for inspection and the issue note."""
    rows = [(s, c.kind, c.text) for s, caps in zip(index, captions) for c in caps]
    return pd.DataFrame(rows, columns=["spot", "kind", "caption"])
