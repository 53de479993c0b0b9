"""Baselines for zero-shot scoring: a marker-gene score and chance.

The marker-gene score of a query is the mean expression of the genes its vocabulary term lists
(``configs/vocabulary.yaml``): ``"log1p"`` = mean log1p(counts per 10k), ``"zscore"`` = mean of
the genes' per-section z-scores (each gene weighted equally whatever its level).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np

from ..prompts import Vocabulary, load_vocabulary
from .config import InputConfig
from .expression_encoder import log1p_panel, standardize

log = logging.getLogger(__name__)


def query_genes(query: str, vocabulary: Vocabulary) -> list[str]:
    """Marker genes of the vocabulary term a query names (by name or synonym); ``[]`` if none."""
    term = vocabulary.lookup(query)
    return list(term.genes) if term is not None else []


def marker_gene_scores(
    adata: ad.AnnData,
    queries: Sequence[str],
    *,
    vocabulary: Vocabulary | None = None,
    mode: Literal["log1p", "zscore"] = "log1p",
    group_key: str = "section",
) -> np.ndarray:
    """``(n, Q)`` marker-gene score per spot and query (NaN for a query with no measured marker gene)."""
    vocabulary = vocabulary or load_vocabulary()
    out = np.full((adata.n_obs, len(queries)), np.nan, dtype=np.float32)
    groups = adata.obs[group_key].astype(str).to_numpy() if group_key in adata.obs else None
    for j, q in enumerate(queries):
        genes = [g for g in query_genes(q, vocabulary) if g in adata.var_names]
        if not genes:
            log.warning("marker-gene baseline: no measured marker gene for query %r", q)
            continue
        x, _ = log1p_panel(adata, genes, InputConfig(min_overlap=0.0))
        if mode == "zscore":
            x = standardize(x, groups, InputConfig(standardize="zscore"))
        out[:, j] = x.mean(axis=1)
    return out


def chance_scores(n: int, n_queries: int, seed: int = 0) -> np.ndarray:
    """``(n, Q)`` uniform random scores: the empirical chance level (AUROC ≈ 0.5)."""
    return np.random.default_rng(seed).random((n, n_queries)).astype(np.float32)
