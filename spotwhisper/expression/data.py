"""Assemble model inputs (image features) and targets (measured expression) from AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
from scipy import sparse

from ..genes import log1p_normalize, panel_matrix
from ..setmodel import NetConfig, SpotInputs, inputs_for
from .train import TrainingData


def training_data(adata: ad.AnnData, genes: Sequence[str], encoder: str, net: NetConfig, min_overlap: float) -> TrainingData:
    """Inputs plus log1p(CP10k) targets, raw counts and library sizes of the panel ``genes``."""
    log1p_normalize(adata)
    y, _ = panel_matrix(adata, genes, min_overlap=min_overlap)
    counts, _ = panel_matrix(adata, genes, layer=None, min_overlap=min_overlap)
    lib = np.asarray(adata.X.sum(axis=1)).ravel() if sparse.issparse(adata.X) else adata.X.sum(axis=1)
    return TrainingData(inputs_for(adata, encoder, net), y, counts, lib.astype(np.float32))


def concat_training(parts: Sequence[TrainingData]) -> TrainingData:
    """Stack the spots of several sections (neighbour features were already gathered per section);
    ``copies`` is the largest of the parts'."""
    inputs = SpotInputs.concat([p.inputs for p in parts])
    stack = lambda arrs: None if arrs[0] is None else np.concatenate(arrs)  # noqa: E731
    return TrainingData(inputs, stack([p.log1p for p in parts]), stack([p.counts for p in parts]),
                        stack([p.libsize for p in parts]), copies=max(p.copies for p in parts))
