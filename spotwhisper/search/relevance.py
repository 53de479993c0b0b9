"""Absolute relevance: every route's per-spot score calibrated against a null that does not come
from ranking the searched slide, so a query for something absent finds no region.

Text-space routes (transcriptome, image, measured; PLIP / CONCH in their own spaces) — the
CellWhisperer recipe: at each spot, the probability that the query rather than one of a fixed set
of *reference descriptions* (every vocabulary term plus generic tissue descriptions,
``configs/search.yaml`` ``relevance.background``) is the spot's caption, with the model's own
temperature. Reference descriptions the model cannot tell from the query (cosine between their
embeddings ≥ ``synonym_similarity``) count with the query, not against it, and so do the terms the
vocabulary says the query stands for (``Vocabulary.counted_with``: the terms it names by name or synonym,
and the kinds of those, ``narrower``: "T cells" count with "immune cells"). The calibrated score is
the log-odds of that probability::

    T = logsumexp(scale · [cos(q), cos(b) for b ∈ syn(q)]) − logsumexp(scale · [cos(b) for b ∉ syn(q)])

It does not depend on which other spots or slides are searched. "A minus B" adds B (and its
near-synonyms) to the competitors of A.

Protein route: a marker's level against a reference distribution of the same marker on reference
slides (``spotwhisper/resources/protein_reference.npz``), mapped onto the same scale so that the
level at the reference's ``protein_hit_quantile`` sits exactly at the threshold.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import logsumexp

from .config import RelevanceConfig

#: what the calibrated scores are, for answers and the UI
UNIT = "relevance (log-odds vs reference descriptions)"
#: reference embeddings shared by every engine of the process: (model id, space, names) → (m, D)
_SHARED: dict[tuple, np.ndarray] = {}
_SHARED_LOCK = threading.Lock()


def text_relevance(sq: np.ndarray, sb: np.ndarray, synonyms: np.ndarray, scale: float,
                   negative: np.ndarray | None = None) -> np.ndarray:
    """Log-odds ``(n,)`` that the query (with its near-synonyms) describes each spot, against the
    reference descriptions.

    ``sq`` ``(n,)`` cosine of each spot to the query; ``sb`` ``(n, m)`` cosines to the ``m`` reference
    descriptions; ``synonyms`` ``(m,)`` bool, references counted with the query; ``scale`` the model's
    inverse temperature; ``negative`` ``(n, k)`` cosines to B of "A minus B" (and B's near-synonyms),
    added to the competitors.
    """
    sq = np.asarray(sq, dtype=np.float64)[:, None] * scale
    sb = np.asarray(sb, dtype=np.float64) * scale
    pos = np.concatenate([sq, sb[:, synonyms]], axis=1)
    neg = sb[:, ~synonyms]
    if negative is not None:
        neg = np.concatenate([neg, np.asarray(negative, dtype=np.float64) * scale], axis=1)
    if neg.shape[1] == 0:
        raise ValueError("every reference description is a near-synonym of the query: nothing to compare it with")
    return logsumexp(pos, axis=1) - logsumexp(neg, axis=1)


def level_relevance(levels: np.ndarray, quantiles: np.ndarray, cfg: RelevanceConfig, n_reference: int = 1000) -> np.ndarray:
    """Marker levels ``(n,)`` on the relevance scale: ``logit(F(x)) − logit(hit quantile) + threshold``,
    ``F`` the reference distribution given by its ``quantiles`` (101 values, 0th … 100th percentile) over
    ``n_reference`` spots (tail probabilities are bounded by half a spot)."""
    q = np.asarray(quantiles, dtype=np.float64)
    probs = np.linspace(0.0, 1.0, len(q))
    x = np.asarray(levels, dtype=np.float64)
    f = np.interp(x, q, probs, left=0.0, right=1.0)
    eps = 0.5 / max(n_reference, 1)
    f = np.clip(f, eps, 1 - eps)
    hit = cfg.protein_hit_quantile
    out = np.log(f / (1 - f)) - np.log(hit / (1 - hit)) + cfg.threshold
    return np.where(np.isfinite(x), out, np.nan)


class ReferencePrompts:
    """The reference descriptions embedded once per text space, and per slide their cosines to the
    spots (an LRU of ``cache_size`` slide × route matrices; thread-safe)."""

    def __init__(self, names: Sequence[str], cache_size: int = 32) -> None:
        if len(names) < 2:
            raise ValueError("relevance needs at least two reference descriptions")
        self.names = list(dict.fromkeys(names))
        self._emb: dict[str, np.ndarray] = {}
        self._sims: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = cache_size

    def embeddings(self, space: str, embed: Callable[[list[str]], np.ndarray], model_id: str = "") -> np.ndarray:
        """``(m, D)`` embeddings of the references in text space ``space`` (``embed`` maps names to rows);
        shared across engines by ``model_id`` (a fingerprint of the model that embeds them)."""
        key = (model_id, space, tuple(self.names))
        with self._lock:
            got = self._emb.get(space)
        if got is None and model_id:
            with _SHARED_LOCK:
                got = _SHARED.get(key)
        if got is None:
            got = np.asarray(embed(self.names), dtype=np.float32)
            if model_id:
                with _SHARED_LOCK:
                    _SHARED[key] = got
        with self._lock:
            self._emb[space] = got
        return got

    def spot_sims(self, key: tuple, emb: np.ndarray, refs: np.ndarray) -> np.ndarray:
        """``(n, m)`` cosines of spot embeddings ``emb`` to the references, cached under ``key``
        (slide, id of its AnnData, route)."""
        with self._lock:
            got = self._sims.get(key)
            if got is not None:
                self._sims.move_to_end(key)
                return got
        got = np.asarray(emb, dtype=np.float32) @ refs.T
        with self._lock:
            self._sims[key] = got
            while len(self._sims) > self.cache_size:
                self._sims.popitem(last=False)
        return got

    def synonyms(self, refs: np.ndarray, query: np.ndarray, similarity: float, exclude: Sequence[str] = ()) -> np.ndarray:
        """``(m,)`` bool: references whose embedding is within ``similarity`` (cosine) of the query, or named in
        ``exclude``. A space in which every reference is that close to the query cannot tell them apart
        (e.g. an untrained model): then only the references named in ``exclude`` count with the query."""
        lowered = {e.strip().lower() for e in exclude}
        named = np.array([n.strip().lower() in lowered for n in self.names])
        out = (refs @ np.asarray(query, dtype=np.float32) >= similarity) | named
        return named if out.all() else out
