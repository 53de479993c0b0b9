"""Training data: spots × panel input, their captions as indices into unique texts, cached text embeddings.

Text embeddings of the unique captions are computed once with the frozen text tower and kept in a
disk cache (``<cache_dir>/<encoder>.npz``, text → vector), so training epochs never run the
sentence encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from .. import keys
from ..atomic import atomic_file
from .captions import Caption
from .config import InputConfig
from .expression_encoder import expression_input
from .text_encoder import TextEncoder

log = logging.getLogger(__name__)


class EmbeddingStore:
    """Text → embedding cache on disk for one text encoder (a single ``.npz``, written atomically).

    Captions are the keys themselves, so new caption wording simply adds entries; the file is named
    by the encoder's :meth:`~spotwhisper.language.text_encoder.TextEncoder.fingerprint` (settings and
    weights), so another encoder or other weights never reuse these vectors."""

    def __init__(self, cache_dir: str | Path, encoder: TextEncoder) -> None:
        self.path = Path(cache_dir) / f"text_emb_{encoder.fingerprint()}.npz"
        self.encoder = encoder
        self.table: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as z:
                self.table = dict(zip(z["texts"].tolist(), z["emb"]))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(m, d)`` embeddings of ``texts``, computing and storing the missing ones."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            log.info("encoding %d new captions with %s", len(missing), self.encoder.name)
            self.table.update(zip(missing, self.encoder.encode(missing, progress=True)))
            self._save()
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def _save(self) -> None:
        with atomic_file(self.path, suffix=".part.npz") as tmp:
            np.savez(tmp, texts=np.array(list(self.table), dtype=str), emb=np.stack(list(self.table.values())))


@dataclass
class CaptionedSpots:
    """Spots with their encoder input and captions.

    ``x`` ``(n, G)`` standardised panel input; ``texts`` the unique captions ``(U,)`` with their
    ``kinds``; ``spot_captions[i]`` the caption indices of spot ``i``; ``text_emb`` ``(U, d)``.
    """

    x: np.ndarray
    obs_names: list[str]
    patients: np.ndarray
    texts: list[str]
    kinds: list[str]
    spot_captions: list[np.ndarray]
    text_emb: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def sample(self, rows: np.ndarray, rng: np.random.Generator, kind_weights: dict[str, float] | None = None) -> np.ndarray:
        """One caption index per spot in ``rows``: a kind first (weighted), then a caption of that kind."""
        key = tuple(sorted((kind_weights or {}).items()))
        if getattr(self, "_sampler_key", None) != key:
            self._build_sampler(kind_weights or {})
            self._sampler_key = key
        u_kind, u_cap = rng.random(len(rows)), rng.random(len(rows))
        out = np.empty(len(rows), dtype=np.int64)
        for j, i in enumerate(rows):
            groups, cum = self._groups[i], self._cum[i]
            g = groups[min(int(np.searchsorted(cum, u_kind[j] * cum[-1], side="right")), len(groups) - 1)]
            out[j] = g[int(u_cap[j] * len(g))]
        return out

    def _build_sampler(self, kind_weights: dict[str, float]) -> None:
        kinds = np.asarray(self.kinds)
        self._groups, self._cum = [], []
        for caps in self.spot_captions:
            present = sorted(set(kinds[caps]))
            self._groups.append([caps[kinds[caps] == k] for k in present])
            w = np.array([kind_weights.get(k, 1.0) for k in present], dtype=float)
            self._cum.append(np.cumsum(w if w.sum() > 0 else np.ones_like(w)))


def build_captioned_spots(
    adata: ad.AnnData,
    captions: list[list[Caption]],
    genes: Sequence[str],
    input_cfg: InputConfig,
    kinds: Sequence[str] | None = None,
) -> CaptionedSpots:
    """Pack ``adata`` spots that have at least one caption (of ``kinds``, default all) for training."""
    index: dict[str, int] = {}
    kind_of: list[str] = []
    spot_caps, keep = [], []
    for i, caps in enumerate(captions):
        ids = []
        for c in caps:
            if kinds is not None and c.kind not in kinds:
                continue
            if c.text not in index:
                index[c.text] = len(index)
                kind_of.append(c.kind)
            ids.append(index[c.text])
        if ids:
            keep.append(i)
            spot_caps.append(np.array(sorted(set(ids)), dtype=np.int64))
    if not keep:
        raise ValueError("no spot has a caption — check the annotations in the data directory")
    x = expression_input(adata, genes, input_cfg)[keep]
    patients = adata.obs[keys.PATIENT].astype(str).to_numpy()[keep] if keys.PATIENT in adata.obs else np.array([""] * len(keep))
    return CaptionedSpots(
        x=x.astype(np.float32),
        obs_names=[adata.obs_names[i] for i in keep],
        patients=patients,
        texts=list(index),
        kinds=kind_of,
        spot_captions=spot_caps,
    )
