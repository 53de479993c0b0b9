"""``stain_stats``: a hand-made tile descriptor — statistics of the haematoxylin, eosin and DAB optical
densities of a tile read at a fixed coarse resolution (3.5 µm/px), no learned weights.

Why it is the default image representation: across patients (train on her2st patient C, test on
patient B) it predicts expression and zero-shot cell types as well as EfficientNet-Lite0 features of
the spot tile and its 3×3 sub-tiles, and better than those once the slide is a Space Ranger hires
image (2–4 µm/px): every slide finer than 3.5 µm/px is read at 3.5 µm/px, so a full-resolution scan
and a hires PNG give the same numbers. It costs nothing next to a CNN (see ``benchmarks/results``
and ``spotwhisper bench expression``).

Per tile (RGB in [0, 1], any size) the 18 numbers are: mean and standard deviation of the H, E and
D densities (scikit-image ``rgb2hed``, Ruifrok & Johnston 2001), the 10th/50th/90th percentiles of
H and E, the tissue fraction (max − min channel > 20/255), the mean R, G, B, and the mean H and E over
tissue pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .registry import EncoderSpec, LoadedBackbone, register_model

#: µm per pixel the tiles are read at (coarser than any full-resolution scan, as fine as hires PNGs)
TILE_MPP = 3.5
#: names of the 18 outputs, in order
STAT_NAMES = (
    "H_mean", "E_mean", "D_mean", "H_std", "E_std", "D_std",
    "H_p10", "E_p10", "H_p50", "E_p50", "H_p90", "E_p90",
    "tissue_fraction", "R_mean", "G_mean", "B_mean", "H_tissue_mean", "E_tissue_mean",
)
#: min − max channel spread (0–255) above which a pixel counts as tissue
TISSUE_SPREAD = 20.0
#: skimage.color.rgb_from_hed (Ruifrok & Johnston 2001): optical density of H, E and DAB in R, G, B
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


class StainStats(nn.Module):
    """RGB ``(B, 3, H, W)`` in [0, 1] → ``(B, 18)`` stain statistics (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("hed_from_rgb", torch.as_tensor(HED_FROM_RGB, dtype=torch.float32))
        self.register_buffer("q", torch.tensor([0.1, 0.5, 0.9]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        rgb = x.float().flatten(2).transpose(1, 2)  # (B, N, 3)
        od = torch.log(rgb.clamp_min(1e-6)) / float(np.log(1e-6))  # skimage.color.separate_stains
        hed = (od @ self.hed_from_rgb).clamp_min(0)
        spread = torch.round((rgb.amax(-1) - rgb.amin(-1)) * 255.0)  # integer grey levels, as in uint8
        tissue = (spread > TISSUE_SPREAD).float()  # (B, N)
        n_t = tissue.sum(1).clamp_min(1)
        he = hed[..., :2]
        quant = torch.quantile(he, self.q, dim=1)  # (3, B, 2) → p10 H, p10 E, p50 H, …
        tissue_mean = (he * tissue[..., None]).sum(1) / n_t[:, None]
        tissue_mean = torch.where(tissue.sum(1, keepdim=True) > 0, tissue_mean, torch.zeros_like(tissue_mean))
        out = torch.cat([hed.mean(1), hed.std(1, unbiased=False), quant.permute(1, 0, 2).reshape(b, 6),
                         tissue.mean(1, keepdim=True), rgb.mean(1), tissue_mean], dim=1)
        return out


def load_stain_stats(spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool,
                     **model_kwargs) -> LoadedBackbone:
    """No weights: the descriptor is fixed."""
    return LoadedBackbone(StainStats().eval(), len(STAT_NAMES), "fixed:stain_stats-v1")


@register_model
def stain_stats() -> EncoderSpec:
    return EncoderSpec(
        name="stain_stats",
        family="handcrafted",
        embed_dim=len(STAT_NAMES),
        input_size=0,  # any tile size: tiles are read at tile_mpp
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        interpolation="bilinear",
        weights="none (fixed statistics)",
        licence="Apache-2.0 (this project)",
        loader=load_stain_stats,
        tile_mpp=TILE_MPP,
        reference="Ruifrok & Johnston 2001 colour deconvolution (skimage.color.rgb2hed); spotwhisper issue 13",
    )
