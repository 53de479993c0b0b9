"""One compact image vector per spot, for search by example ("find more like this").

The vector pools what the image encoder saw of a spot: its tile features ``(n, d)`` and the mean of
its ``g × g`` sub-tile features, each feature standardised over the slide's spots (z-score: removes
what the whole slide shares — stain, scanner, the encoder's constant channels), concatenated and
mapped to ``dim`` dimensions by a fixed random orthonormal matrix drawn from ``seed`` (an isometry
when ``2 d ≤ dim``, a Johnson–Lindenstrauss projection otherwise), then L2-normalised. The same
``(encoder, d, dim, seed)`` gives the same matrix on every machine, so vectors of slides read by one
encoder are comparable across slides and collections.

Measured (``benchmarks/search_by_example.py``): on her2st these standardised features find a class
from a 10-spot example less well than the learned spaces (transcriptome and aligned image
embeddings), but on the foreign ccRCC slides — where those spaces fall below chance across sections —
they are the route that transfers, which is why search by example fuses all three.
"""

from __future__ import annotations

import numpy as np

#: per-feature standard deviations below this count as constant (left at 0 after standardising)
MIN_STD = 1e-6
#: spots whose sub-tile features are averaged at once (bounds the memory of a 20,000-tile slide)
SUBTILE_CHUNK = 2048


def projection(d_in: int, dim: int, seed: int = 0) -> np.ndarray:
    """A fixed ``(d_in, dim)`` matrix with orthonormal columns (``d_in ≥ dim``) or rows (``d_in < dim``),
    drawn from ``seed`` (float64; QR of a standard normal matrix)."""
    if d_in < 1 or dim < 1:
        raise ValueError(f"projection needs positive dimensions, got {d_in} → {dim}")
    g = np.random.default_rng(seed).standard_normal((max(d_in, dim), min(d_in, dim)))
    q, _ = np.linalg.qr(g)  # (max, min) with orthonormal columns
    return q if d_in >= dim else q.T


def column_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every column of ``x`` ``(n, d)`` over its rows, NaN ignored (float64;
    accumulated :data:`SUBTILE_CHUNK` rows at a time, two passes: no float64 copy of ``x``). A column
    without a value gets NaN, as :func:`numpy.nanmean` would."""
    count, total = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), SUBTILE_CHUNK):
        c = x[i : i + SUBTILE_CHUNK].astype(np.float64)
        ok = ~np.isnan(c)
        count += ok.sum(0)
        total += np.where(ok, c, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    sq = np.zeros(x.shape[1])
    for i in range(0, len(x), SUBTILE_CHUNK):
        c = x[i : i + SUBTILE_CHUNK].astype(np.float64) - mean
        sq += np.where(np.isnan(c), 0.0, c * c).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mean, np.sqrt(sq / count)


def subtile_means(subtiles: np.ndarray) -> np.ndarray:
    """Mean over the sub-tiles of every spot ``(n, g*g, d)`` → ``(n, d)`` float64, NaN (a missing sub-tile)
    ignored; :data:`SUBTILE_CHUNK` spots at a time, so ``(n, g*g, d)`` is never copied whole."""
    sub = np.asarray(subtiles)
    return np.concatenate([np.nanmean(sub[i : i + SUBTILE_CHUNK], axis=1, dtype=np.float64)
                           for i in range(0, len(sub), SUBTILE_CHUNK)])


def pooled_image_vectors(features: np.ndarray, subtiles: np.ndarray | None, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Per-spot image vectors ``(n, dim)`` float32, L2-normalised, from tile features ``(n, d)`` and
    sub-tile features ``(n, g*g, d)`` (``None``: the tile features alone). See the module docstring.

    Equal to ``nan_to_num(hstack([z(features), z(subtile_means)])) @ projection``, with ``z`` the float64
    z-score of every column over the spots (constant columns at 0), computed block by block (each part's
    rows a chunk at a time): a 20,000-tile slide costs its sub-tile means ``(n, d)`` beyond its inputs, not
    float64 copies of everything."""
    feats = np.asarray(features)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"expected tile features of shape (n, d) with n ≥ 1, got {feats.shape}")
    parts = [feats]
    if subtiles is not None:
        sub = np.asarray(subtiles)
        if sub.ndim != 3 or len(sub) != len(feats):
            raise ValueError(f"sub-tile features of shape {sub.shape} do not match tile features {feats.shape}")
        parts.append(subtile_means(sub))
    proj = projection(sum(p.shape[1] for p in parts), dim, seed)
    v = np.zeros((len(feats), dim))
    offset = 0
    for part in parts:
        mean, sd = column_moments(part)
        sd = np.where(sd > MIN_STD, sd, 1.0)
        block = proj[offset : offset + part.shape[1]]
        for i in range(0, len(part), SUBTILE_CHUNK):
            v[i : i + SUBTILE_CHUNK] += np.nan_to_num((part[i : i + SUBTILE_CHUNK].astype(np.float64) - mean) / sd) @ block
        offset += part.shape[1]
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), 1.0 / np.sqrt(dim))  # a featureless spot: a fixed unit vector
    return v.astype(np.float32)
