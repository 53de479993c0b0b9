"""Pooled image vectors of a whole slide are computed in chunks (bounded memory) and equal the one-shot float64 mean."""

from __future__ import annotations

import numpy as np

from spotwhisper.encoders import pooled


def standardised(x: np.ndarray) -> np.ndarray:
    """The former one-shot standardisation: float64 z-scores per column, NaN ignored, constant columns at 0."""
    x = np.asarray(x, dtype=np.float64)
    sd = np.nanstd(x, axis=0)
    return (x - np.nanmean(x, axis=0)) / np.where(sd > pooled.MIN_STD, sd, 1.0)


def test_chunked_subtile_mean_equals_the_float64_mean(monkeypatch):
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((700, 24)).astype(np.float32)
    subs = rng.standard_normal((700, 9, 24)).astype(np.float32)
    subs[5, 3] = np.nan  # a missing sub-tile is skipped, as before
    chunked = pooled.pooled_image_vectors(feats, subs, dim=16)
    monkeypatch.setattr(pooled, "SUBTILE_CHUNK", 10_000)  # one chunk: the whole array at once
    whole = pooled.pooled_image_vectors(feats, subs, dim=16)
    monkeypatch.setattr(pooled, "SUBTILE_CHUNK", 64)
    np.testing.assert_array_equal(pooled.pooled_image_vectors(feats, subs, dim=16), whole)
    np.testing.assert_array_equal(chunked, whole)
    reference = standardised(np.nanmean(subs.astype(np.float64), axis=1))  # the former one-shot computation
    z = np.nan_to_num(np.hstack([standardised(feats), reference])) @ pooled.projection(48, 16)
    np.testing.assert_allclose(whole, (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32), atol=1e-6)
