"""Assemble model inputs (image features) and targets (measured expression) from AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import torch
from scipy import sparse

from .. import keys
from .model import SpotInputs
from .panel import log1p_normalize, panel_matrix
from .train import TrainingData


class MissingFeaturesError(KeyError):
    """The AnnData holds no image features of the model's encoder."""

    def __str__(self) -> str:
        return str(self.args[0])


def inputs_from_adata(adata: ad.AnnData, encoder: str, use_subtiles: bool = True, use_neighbours: bool = True) -> SpotInputs:
    """Spot, sub-tile and neighbour features of ``encoder`` stored by ``encoders.extract_features``."""
    fkey, skey = f"{keys.FEATURES_PREFIX}{encoder}", f"{keys.FEATURES_PREFIX}{encoder}{keys.FEATURES_SUB_SUFFIX}"
    if fkey not in adata.obsm:
        have = [k for k in adata.obsm if k.startswith(keys.FEATURES_PREFIX)]
        raise MissingFeaturesError(
            f"no obsm[{fkey!r}] (have {have}); run `spotwhisper features extract --model {encoder}` first"
        )
    spot = np.asarray(adata.obsm[fkey], dtype=np.float32)
    sub = None
    if use_subtiles:
        if skey not in adata.obsm:
            raise MissingFeaturesError(f"no obsm[{skey!r}]: the model needs sub-tile features (do not use --no-subtiles)")
        sub = torch.as_tensor(np.asarray(adata.obsm[skey], dtype=np.float32))
    neigh = mask = None
    if use_neighbours:
        ring = np.asarray(adata.uns[keys.FEATURES_UNS][encoder]["neighbours"], dtype=np.int64)
        mask_np = ring >= 0
        neigh = torch.as_tensor(spot[np.where(mask_np, ring, 0)])
        mask = torch.as_tensor(mask_np)
    return SpotInputs(torch.as_tensor(spot), sub, neigh, mask)


def training_data(adata: ad.AnnData, genes: Sequence[str], encoder: str, use_subtiles: bool, use_neighbours: bool,
                  min_overlap: float) -> TrainingData:
    """Inputs plus log1p(CP10k) targets, raw counts and library sizes of the panel ``genes``."""
    log1p_normalize(adata)
    y, _ = panel_matrix(adata, genes, min_overlap=min_overlap)
    counts, _ = panel_matrix(adata, genes, layer=None, min_overlap=min_overlap)
    lib = np.asarray(adata.X.sum(axis=1)).ravel() if sparse.issparse(adata.X) else adata.X.sum(axis=1)
    return TrainingData(inputs_from_adata(adata, encoder, use_subtiles, use_neighbours), y, counts, lib.astype(np.float32))


def concat_training(parts: Sequence[TrainingData]) -> TrainingData:
    """Stack the spots of several sections (neighbour features were already gathered per section)."""
    cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
    inputs = SpotInputs(
        cat([p.inputs.spot for p in parts]),
        cat([p.inputs.sub for p in parts]),
        cat([p.inputs.neigh for p in parts]),
        cat([p.inputs.neigh_mask for p in parts]),
    )
    stack = lambda arrs: None if arrs[0] is None else np.concatenate(arrs)  # noqa: E731
    return TrainingData(inputs, stack([p.log1p for p in parts]), stack([p.counts for p in parts]), stack([p.libsize for p in parts]))
