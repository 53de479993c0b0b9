"""Checking vectors before they reach faiss: 2-D, finite, non-zero, L2-normalised float32."""

from __future__ import annotations

import numpy as np

from .errors import BadVectorsError, DimensionMismatchError


def as_unit_vectors(x, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``(n, D)`` array with unit L2 rows (cosine = inner product).

    A 1-D input is one vector. Raises :class:`BadVectorsError` for an empty, non-numeric,
    non-finite or all-zero row, and :class:`DimensionMismatchError` when ``D != dim``.
    ``what`` names the input in messages (e.g. ``"query vectors of route 'text'"``).
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise BadVectorsError(f"{what}: not a numeric array ({err})") from err
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise BadVectorsError(f"{what}: expected a 2-D array (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise BadVectorsError(f"{what}: empty (0 vectors)")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what}: dimension {arr.shape[1]}, but the index holds {dim}-d vectors")
    if arr.shape[1] == 0:
        raise BadVectorsError(f"{what}: vectors of dimension 0")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise BadVectorsError(f"{what}: {bad.size} row(s) hold NaN or infinite values (first rows: {bad[:5].tolist()})")
    norms = np.linalg.norm(arr, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        raise BadVectorsError(
            f"{what}: {bad.size} all-zero row(s) cannot be L2-normalised (first rows: {bad[:5].tolist()})"
        )
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)
