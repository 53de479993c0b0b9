"""Macenko stain normalisation (Macenko et al., ISBI 2009) with slide-level stain estimation.

Per-tile estimation (as ``torchstain`` does) is unstable on tiles with little tissue, so the
source stain vectors are estimated once, from the tissue pixels of a slide thumbnail, and every
tile of that slide is then mapped onto the reference vectors with the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import StainConfig


@dataclass
class StainMatrix:
    """Stain vectors ``he`` (3 × 2, optical density, columns H and E) and 99th-percentile concentrations."""

    he: np.ndarray
    max_c: np.ndarray


def _optical_density(rgb: np.ndarray, io: float) -> np.ndarray:
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / io)


def estimate_stains(rgb: np.ndarray, cfg: StainConfig | None = None) -> StainMatrix:
    """Estimate the H and E stain vectors of an RGB image ``(h, w, 3)`` uint8 (Macenko)."""
    cfg = cfg or StainConfig()
    od = _optical_density(rgb, cfg.io)
    od_hat = od[~np.any(od < cfg.beta, axis=1)]
    if len(od_hat) < 100:
        raise ValueError(f"too few stained pixels ({len(od_hat)}) to estimate stain vectors")
    _, eigvecs = np.linalg.eigh(np.cov(od_hat.T))
    plane = eigvecs[:, 1:3]
    proj = od_hat @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, cfg.alpha), np.percentile(phi, 100 - cfg.alpha)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    # haematoxylin has the larger red optical density
    he = np.stack([v_min, v_max], axis=1) if v_min[0] > v_max[0] else np.stack([v_max, v_min], axis=1)
    he = he * np.sign(he.sum(axis=0, keepdims=True))  # stain vectors are positive
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    max_c = np.percentile(conc, 99, axis=1)
    return StainMatrix(he=he, max_c=max_c)


class MacenkoNormalizer:
    """Map tiles of one slide onto reference stain vectors.

    ``fit(rgb)`` estimates the slide's stains (e.g. from the tissue pixels of its thumbnail);
    ``transform(tile)`` then normalises any tile of that slide, ``(h, w, 3)`` uint8 → same shape.
    """

    def __init__(self, cfg: StainConfig | None = None):
        self.cfg = cfg or StainConfig()
        self.reference = StainMatrix(np.asarray(self.cfg.reference_he, float), np.asarray(self.cfg.reference_max_c, float))
        self.source: StainMatrix | None = None

    def fit(self, rgb: np.ndarray) -> MacenkoNormalizer:
        self.source = estimate_stains(rgb, self.cfg)
        return self

    def transform(self, tile: np.ndarray) -> np.ndarray:
        if self.source is None:
            raise RuntimeError("MacenkoNormalizer.fit must be called before transform")
        h, w, _ = tile.shape
        od = _optical_density(tile, self.cfg.io)
        conc = np.linalg.lstsq(self.source.he, od.T, rcond=None)[0]
        if self.cfg.scale_concentrations:
            conc *= (self.reference.max_c / self.source.max_c)[:, None]
        out = self.cfg.io * np.exp(-self.reference.he @ conc)
        return np.clip(out.T, 0, 255).reshape(h, w, 3).astype(np.uint8)
