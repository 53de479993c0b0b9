"""Reference distributions of virtual protein levels, the null of the protein route's relevance.

For each marker of the panel: 101 quantiles (0th … 100th percentile) of its raw level
(``obsm["proteins_raw"]``, route B: log1p units) over the spots of reference slides processed the
way search sees slides — the shipped H&E → expression model on her2st sections (out of fold for
its own training sections). ``spotwhisper/resources/protein_reference.npz`` ships one; rebuild it
with ``python benchmarks/protein_reference.py`` after retraining the expression model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..atomic import atomic_file

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "resources" / "protein_reference.npz"
N_QUANTILES = 101


@dataclass
class ProteinReference:
    """Per-marker reference quantiles ``(n_markers, 101)`` (NaN rows: no reference), with provenance."""

    markers: list[str]
    quantiles: np.ndarray
    n_spots: int
    info: dict = field(default_factory=dict)  #: slides, source, expression model that made the levels

    def of(self, marker: str) -> np.ndarray | None:
        """The marker's quantiles, or None when the reference has none."""
        if marker not in self.markers:
            return None
        q = self.quantiles[self.markers.index(marker)]
        return q if np.isfinite(q).all() and q[-1] > q[0] else None

    def save(self, path: str | Path = DEFAULT_PATH) -> Path:
        path = Path(path)
        with atomic_file(path, suffix=".part.npz") as tmp:
            np.savez(tmp, markers=np.array(self.markers, dtype=str), quantiles=self.quantiles,
                     n_spots=np.array(self.n_spots), info=np.array(json.dumps(self.info)))
        return path


def build_protein_reference(levels: Sequence[np.ndarray], markers: Sequence[str], info: dict | None = None) -> ProteinReference:
    """Quantiles of raw levels pooled over reference slides (each ``(n_i, n_markers)``, panel order)."""
    if not levels:
        raise ValueError("no reference slides")
    pooled = np.concatenate([np.asarray(x, dtype=np.float64) for x in levels])
    if pooled.shape[1] != len(markers):
        raise ValueError(f"levels have {pooled.shape[1]} markers, names {len(markers)}")
    probs = np.linspace(0, 100, N_QUANTILES)
    q = np.full((len(markers), N_QUANTILES), np.nan)
    for j in range(len(markers)):
        v = pooled[:, j][np.isfinite(pooled[:, j])]
        if v.size:
            q[j] = np.percentile(v, probs)
    return ProteinReference(list(markers), q, int(len(pooled)), dict(info or {}))


@lru_cache(maxsize=4)
def load_protein_reference(path: str | None = None) -> ProteinReference | None:
    """The reference at ``path`` (default: the shipped one), or None when there is none."""
    p = Path(path) if path else DEFAULT_PATH
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as z:
        return ProteinReference([str(m) for m in z["markers"]], z["quantiles"], int(z["n_spots"]),
                                json.loads(str(z["info"])))
