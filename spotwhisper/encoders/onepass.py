"""Sub-tile features from one pass over the spot tile (issue 22: fewer pixels per spot).

Today each spot costs ten backbone passes: its 200 µm tile and its 3 × 3 sub-tiles, each upsampled
to 224 px. :class:`OnePassSubtiles` runs the backbone once on the tile at the model's resolution and
reads the sub-tiles off its last feature map ``(C, h, w)`` (7 × 7 for a 224 px EfficientNet): the
tile feature is the map's mean — exactly the feature of the ten-pass layout — and sub-tile ``(r, c)``
is the area-weighted mean of the map over the part of the tile that sub-tile covers
(:func:`box_pooling_matrix`). One output row per image is ``(1 + g*g) * C`` numbers: the tile, then
the sub-tiles row-major, as ``obsm["features_<m>_sub"]`` lays them out.

The heads that read these features must be trained on them (their sub-tile features are coarser and
see more context than a pass over the sub-tile); the encoder has its own registry name
(``efficientnet_lite0_onepass``), so its features, caches and models never mix with the ten-pass ones.
Pooling is two matrix products, so the module exports to ONNX like its backbone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import load_efficientnet_lite
from .registry import EncoderSpec, LoadedBackbone, get_spec, register_model

#: sub-tiles per side read from the feature map (the DeepSpot 3 × 3 layout of configs/tiles.yaml)
GRID = 3


def box_pooling_matrix(cells: int, grid: int) -> np.ndarray:
    """``(grid, cells)`` weights: row ``r`` averages the map cells under the ``r``-th of ``grid`` equal
    parts of the side, each cell weighted by the length it shares with that part (rows sum to 1)."""
    if cells < 1 or grid < 1:
        raise ValueError(f"need positive sizes, got {cells} cells and a grid of {grid}")
    edges = np.linspace(0.0, cells, grid + 1)
    lo, hi = np.arange(cells), np.arange(cells) + 1.0
    w = np.clip(np.minimum(hi[None], edges[1:, None]) - np.maximum(lo[None], edges[:-1, None]), 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


class OnePassSubtiles(nn.Module):
    """``backbone.forward_features`` → ``(B, (1 + g*g) * C)``: the map's mean, then its ``g × g`` box means."""

    def __init__(self, backbone: nn.Module, image_size: int, grid: int = GRID):
        super().__init__()
        self.backbone, self.grid = backbone, grid
        with torch.no_grad():
            cells = backbone.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-1]
        self.register_buffer("pool", torch.from_numpy(box_pooling_matrix(cells, grid)).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone.forward_features(x)  # (B, C, h, w)
        tile = fmap.mean(dim=(2, 3))  # (B, C)
        subs = torch.matmul(torch.matmul(self.pool, fmap), self.pool.t())  # (B, C, g, g)
        subs = subs.flatten(2).transpose(1, 2)  # (B, g*g, C), row-major sub-tiles
        return torch.cat([tile[:, None], subs], dim=1).flatten(1)


def load_onepass(spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool,
                 **model_kwargs: Any) -> LoadedBackbone:
    """The ten-pass encoder's backbone (same weights, :func:`load_efficientnet_lite`) wrapped in
    :class:`OnePassSubtiles`."""
    base = load_efficientnet_lite(get_spec(spec.arch_kwargs["base"]), weights, pretrained, local_files_only, **model_kwargs)
    base.module.eval()
    return LoadedBackbone(OnePassSubtiles(base.module, spec.input_size, spec.pooled_grid), base.embed_dim, base.weights_id)


@register_model
def efficientnet_lite0_onepass() -> EncoderSpec:
    base = get_spec("efficientnet_lite0")
    return replace(base, name="efficientnet_lite0_onepass", arch_kwargs={"base": base.name}, loader=load_onepass,
                   reference=base.reference + "; sub-tiles pooled from one pass (spotwhisper.encoders.onepass)",
                   pooled_grid=GRID)


@register_model
def efficientnet_lite0_onepass448() -> EncoderSpec:
    """One pass over the spot tile at twice the model's input side (0.45 µm/px for a 200 µm tile): a 14 × 14
    map, four times the work of a 224 px pass and 2.5 × less than ten passes."""
    return replace(efficientnet_lite0_onepass(), name="efficientnet_lite0_onepass448", input_size=448)
