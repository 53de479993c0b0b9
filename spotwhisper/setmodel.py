"""Set-model building blocks shared by the image heads: spot inputs, the DeepSpot-style set trunk.

Both the H&E → expression model (:mod:`spotwhisper.expression`) and the aligned image head
(:mod:`spotwhisper.imagetext.aligned`) read the same three sets of image features per spot — the
spot tile ``(d,)``, its sub-tiles ``(g*g, d)`` and its neighbours' spot tiles ``(k, d)`` — embed
every tile with a shared MLP ``phi``, mean-pool each set and map the concatenation with ``rho``.
This module is below every stage (see ``tests/test_import_direction.py``), so neither head reaches
into the other's stage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import torch
from sklearn.utils.extmath import randomized_svd
from torch import nn

from . import keys

log = logging.getLogger(__name__)


@dataclass
class NetConfig:
    """DeepSpot-style set network: shared tile MLP (phi), mean over sets, then rho → genes."""

    pca_dim: int = 256  #: image features are projected on their first principal components first (0 = off)
    hidden: int = 256  #: width of phi (per-tile embedding)
    rho_hidden: int = 256  #: width of the rho MLP
    bottleneck: int = 128  #: width before the per-gene output layer
    dropout: float = 0.5
    use_subtiles: bool = True
    use_neighbours: bool = True
    head: Literal["gaussian", "nb"] = "gaussian"  #: gaussian on log1p values, or negative binomial on counts
    #: standardise every feature by the slide's own mean and std over its spot tiles before the model reads it
    #: (test-time adaptation: another lab's stain and scanner move a slide's features as a whole)
    slide_standardize: bool = False


@dataclass
class SpotInputs:
    """Model inputs for ``n`` spots: ``spot`` ``(n, d)``, ``sub`` ``(n, s, d)`` or None,
    ``neigh`` ``(n, k, d)`` neighbour features and ``neigh_mask`` ``(n, k)`` bool (True = present).

    With ``ring`` ``(n, k)`` (rows of ``spot``, -1 = none) the neighbour features are not held: :meth:`index`
    gathers them for the rows it picks, so a batched pass over a whole slide never holds ``(n, k, d)``."""

    spot: torch.Tensor
    sub: torch.Tensor | None
    neigh: torch.Tensor | None
    neigh_mask: torch.Tensor | None
    ring: torch.Tensor | None = None

    def index(self, idx: torch.Tensor) -> SpotInputs:
        """The spots ``idx`` (neighbour features gathered when held as a ``ring``)."""
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        if self.ring is not None:
            ring = self.ring[idx]
            return SpotInputs(self.spot[idx], pick(self.sub), self.spot[ring.clamp(min=0)], ring >= 0)
        return SpotInputs(self.spot[idx], pick(self.sub), pick(self.neigh), pick(self.neigh_mask))

    def gathered(self) -> SpotInputs:
        """The same inputs with neighbour features held (a no-op unless they are a ``ring``)."""
        return self if self.ring is None else self.index(torch.arange(len(self)))

    def __len__(self) -> int:
        return self.spot.shape[0]

    @staticmethod
    def concat(parts: Sequence[SpotInputs]) -> SpotInputs:
        """The spots of several sections stacked (neighbour features gathered per section first)."""
        parts = [p.gathered() for p in parts]
        cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
        return SpotInputs(cat([p.spot for p in parts]), cat([p.sub for p in parts]), cat([p.neigh for p in parts]),
                          cat([p.neigh_mask for p in parts]))


class SetTrunk(nn.Module):
    """phi (per tile) → mean-pool spot / sub-tiles / neighbours → rho → ``(n, bottleneck)``."""

    def __init__(self, in_dim: int, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.phi = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
        n_sets = 1 + int(cfg.use_subtiles) + int(cfg.use_neighbours)
        self.rho = nn.Sequential(
            nn.Linear(n_sets * cfg.hidden, cfg.rho_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.rho_hidden, cfg.bottleneck),
            nn.GELU(),
        )

    def trunk(self, x: SpotInputs) -> torch.Tensor:
        parts = [self.phi(x.spot)]
        if self.cfg.use_subtiles:
            if x.sub is None:
                raise ValueError("model uses sub-tile features but none were given")
            parts.append(self.phi(x.sub).mean(dim=1))
        if self.cfg.use_neighbours:
            if x.neigh is None or x.neigh_mask is None:
                raise ValueError("model uses neighbour features but none were given")
            m = x.neigh_mask.unsqueeze(-1).float()
            parts.append((self.phi(x.neigh) * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))
        return self.rho(torch.cat(parts, dim=-1))


def feature_stats(x: SpotInputs, pca_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-dimension mean and std of all tiles' features, and the top ``pca_dim`` principal axes
    ``(d, p)`` of the standardised features (scaled to unit variance), or None."""
    feats = [x.spot.numpy()]
    if x.sub is not None:
        feats.append(x.sub.reshape(-1, x.sub.shape[-1]).numpy())
    allf = np.concatenate(feats)
    mean, std = allf.mean(0), allf.std(0) + 1e-6
    if not pca_dim or pca_dim >= allf.shape[1]:
        return mean, std, None
    z = (allf - mean) / std
    _, sv, vt = randomized_svd(z, pca_dim, random_state=0)
    comps = vt.T / (sv / np.sqrt(len(z)))[None, :]
    return mean, std, comps.astype(np.float32)


#: per-slide standardised features are clipped to ± this many of the slide's standard deviations
SLIDE_Z_CLIP = 10.0
#: fewer spot tiles than this make per-slide statistics unreliable (warned about, still applied)
SLIDE_STATS_MIN_SPOTS = 30


def slide_standardize(spot: np.ndarray, *others: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """``spot`` ``(n, d)`` and any arrays of the same features (``(..., d)``: sub-tiles, neighbours)
    standardised by the mean and std of ``spot`` over the slide's ``n`` spot tiles, clipped to
    ± :data:`SLIDE_Z_CLIP`. Features constant on the slide become 0."""
    mean = spot.mean(0)
    std = spot.std(0)
    std = np.where(std > 1e-6 * (np.abs(mean) + 1), std, np.inf)
    z = lambda a: None if a is None else np.clip((a - mean) / std, -SLIDE_Z_CLIP, SLIDE_Z_CLIP).astype(np.float32)  # noqa: E731
    return (z(spot), *(z(o) for o in others))


class MissingFeaturesError(KeyError):
    """The AnnData holds no image features of the model's encoder."""

    def __str__(self) -> str:
        return str(self.args[0])


def inputs_for(adata: ad.AnnData, encoder: str, net: NetConfig, ring: bool = False) -> SpotInputs:
    """The inputs a set network configured by ``net`` reads (see :func:`inputs_from_adata`)."""
    return inputs_from_adata(adata, encoder, net.use_subtiles, net.use_neighbours, net.slide_standardize, ring)


def inputs_from_adata(adata: ad.AnnData, encoder: str, use_subtiles: bool = True, use_neighbours: bool = True,
                      per_slide: bool = False, ring: bool = False) -> SpotInputs:
    """Spot, sub-tile and neighbour features of ``encoder`` stored by ``encoders.extract_features``;
    with ``per_slide`` standardised by the slide's own statistics (:func:`slide_standardize`); with ``ring``
    the neighbours as rows (:attr:`SpotInputs.ring`: gathered per batch, for inference over a whole slide)."""
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
        sub = np.asarray(adata.obsm[skey], dtype=np.float32)
    if per_slide:
        if len(spot) < SLIDE_STATS_MIN_SPOTS:
            log.warning("%d spot tiles: too few for reliable per-slide feature statistics (%d or more)", len(spot),
                        SLIDE_STATS_MIN_SPOTS)
        spot, sub = slide_standardize(spot, sub)
    sub = None if sub is None else torch.as_tensor(sub)
    neigh = mask = held_as_rows = None
    if use_neighbours:
        rows = np.asarray(adata.uns[keys.FEATURES_UNS][encoder]["neighbours"], dtype=np.int64)
        if ring:
            held_as_rows = torch.as_tensor(rows)
        else:
            neigh = torch.as_tensor(spot[np.where(rows >= 0, rows, 0)])
            mask = torch.as_tensor(rows >= 0)
    return SpotInputs(torch.as_tensor(spot), sub, neigh, mask, held_as_rows)
