"""Expression tower: panel input (log1p, standardised per section) → MLP or small transformer → vector.

Input pipeline (:func:`expression_input`): genes are matched to the panel by symbol
(:func:`spotwhisper.genes.panel_matrix`, refusing too small an overlap), values are
log1p(counts per 10k) — taken from ``layers["log1p"]``, made from raw counts, or read as given when
``X`` already holds log1p values (inferred expression) — and standardised per gene within each
section/slide, so measured and inferred (smoother) expression land in the same range.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import torch
from scipy import sparse
from torch import nn

from .. import keys
from ..genes import log1p_normalize, looks_like_counts, panel_matrix
from .config import ExpressionEncoderConfig, InputConfig

log = logging.getLogger(__name__)


def standardize(x: np.ndarray, groups: np.ndarray | None, cfg: InputConfig) -> np.ndarray:
    """Per-gene centring / z-scoring of ``x`` ``(n, G)`` within each group of rows; clipped to ±``cfg.clip``."""
    if cfg.standardize == "none":
        return x.astype(np.float32, copy=False)
    groups = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups)
    labels = np.unique(groups)
    out = None if len(labels) == 1 else np.empty_like(x, dtype=np.float32)
    for g in labels:
        rows = groups == g
        if rows.sum() < cfg.min_group_spots:
            log.warning(
                "standardising %d spot(s) of group %r on their own (fewer than %d): per-gene %s needs a whole "
                "section or slide; pass all its spots together", rows.sum(), g, cfg.min_group_spots, cfg.standardize,
            )
        block = x if out is None else x[rows]
        centred = block - block.mean(axis=0, keepdims=True)  # the one copy of the block; the rest in place
        if cfg.standardize == "zscore":
            centred /= np.maximum(block.std(axis=0, keepdims=True), cfg.min_std)
        np.clip(centred, -cfg.clip, cfg.clip, out=centred)
        if out is None:  # one group (a slide): no second (n, G) array
            return centred.astype(np.float32, copy=False)
        out[rows] = centred
    return out


def log1p_panel(adata: ad.AnnData, genes: Sequence[str], cfg: InputConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(n, G)`` log1p values of the panel ``genes`` and the found-mask ``(G,)`` (see module docstring)."""
    if cfg.layer in adata.layers:
        layer = cfg.layer
    elif looks_like_counts(adata.X):
        work = ad.AnnData(X=adata.X, obs=adata.obs[[]], var=adata.var[[]])
        log1p_normalize(work, layer=keys.LOG1P)
        adata = work
        layer = keys.LOG1P
    else:
        log.info("expression input: X holds non-integer values, read as log1p expression")
        layer = None
    return panel_matrix(adata, genes, layer=layer, min_overlap=cfg.min_overlap)


def expression_input(
    data: ad.AnnData | np.ndarray,
    genes: Sequence[str],
    cfg: InputConfig,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Encoder input ``(n, G)`` float32 from an AnnData (any gene order; counts or log1p) or a matrix.

    A matrix must already hold log1p values of exactly ``genes`` in that order. ``groups`` (one id
    per spot) overrides ``obs[cfg.group_key]``; without either, all spots form one group.
    """
    if isinstance(data, ad.AnnData):
        x, _ = log1p_panel(data, genes, cfg)
        if groups is None and cfg.group_key in data.obs:
            groups = data.obs[cfg.group_key].astype(str).to_numpy()
    else:
        x = np.asarray(data.toarray() if sparse.issparse(data) else data, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(genes):
            raise ValueError(
                f"expression matrix of shape {x.shape}: expected (n_spots, {len(genes)}) log1p values in "
                "panel order — pass an AnnData to map genes by symbol"
            )
    return standardize(x, groups, cfg)


class MLPEncoder(nn.Module):
    """``(n, G)`` → ``(n, hidden[-1])``: Linear → LayerNorm → GELU → Dropout blocks."""

    def __init__(self, n_genes: int, cfg: ExpressionEncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.gene_dropout)]
        width = n_genes
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerEncoder(nn.Module):
    """``(n, G)`` → ``(n, d_model)``: a linear map to ``n_tokens`` gene-program tokens, a small
    transformer encoder over them, mean pooling."""

    def __init__(self, n_genes: int, cfg: ExpressionEncoderConfig) -> None:
        super().__init__()
        self.n_tokens, self.d_model = cfg.n_tokens, cfg.d_model
        self.drop = nn.Dropout(cfg.gene_dropout)
        self.tokenize = nn.Linear(n_genes, cfg.n_tokens * cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.n_tokens, cfg.d_model))
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, dim_feedforward=2 * cfg.d_model, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out_dim = cfg.d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenize(self.drop(x)).view(-1, self.n_tokens, self.d_model) + self.pos
        return self.norm(self.encoder(tokens).mean(dim=1))


def build_expression_encoder(n_genes: int, cfg: ExpressionEncoderConfig) -> nn.Module:
    """The expression tower named by ``cfg.kind`` (``"mlp"`` or ``"transformer"``)."""
    if cfg.kind == "mlp":
        return MLPEncoder(n_genes, cfg)
    if cfg.kind == "transformer":
        return TransformerEncoder(n_genes, cfg)
    raise ValueError(f"unknown expression encoder kind {cfg.kind!r} (use 'mlp' or 'transformer')")
