"""Baselines on the same inputs: ridge regression and the training mean."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..setmodel import SpotInputs

RIDGE_ALPHAS = np.logspace(0, 5, 11)


def flat_features(x: SpotInputs) -> np.ndarray:
    """Concatenate spot, mean sub-tile and mean neighbour features → ``(n, up to 3d)``."""
    parts = [x.spot.numpy()]
    if x.sub is not None:
        parts.append(x.sub.numpy().mean(1))
    if x.neigh is not None and x.neigh_mask is not None:
        m = x.neigh_mask.numpy()[..., None].astype(np.float32)
        parts.append((x.neigh.numpy() * m).sum(1) / np.maximum(m.sum(1), 1))
    return np.concatenate(parts, axis=1)


class RidgeBaseline:
    """Standardised features → ridge regression (alpha by internal CV) → log1p expression."""

    def fit(self, x: SpotInputs, y: np.ndarray) -> RidgeBaseline:
        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        self.model.fit(flat_features(x), y)
        return self

    def predict(self, x: SpotInputs) -> np.ndarray:
        return self.model.predict(flat_features(x)).astype(np.float32)


class MeanBaseline:
    """Predicts every spot as the training mean (per-gene Pearson is undefined: reported as NaN)."""

    def fit(self, x: SpotInputs, y: np.ndarray) -> MeanBaseline:
        self.mean = y.mean(0)
        return self

    def predict(self, x: SpotInputs) -> np.ndarray:
        return np.tile(self.mean, (len(x), 1)).astype(np.float32)
