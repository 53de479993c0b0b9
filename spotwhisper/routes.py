"""The one route vocabulary: the names of the ways a query reaches a spot, shared by index, search,
bench, UI and CLI, and the one result type of a route's zero-shot answer.

=================  ==============================================  ===================================
route              what scores a spot                              vectors (``obsm``) / index route
=================  ==============================================  ===================================
``transcriptome``  H&E → inferred transcriptome → transcriptome–   ``text_emb``
                   text space (the pipeline's main route)
``image``          H&E → aligned image head → the same space       ``image_text_emb_aligned``
``protein``        H&E → inferred transcriptome → virtual          ``proteins`` (levels, not indexed)
                   protein panel (markers the query names)
``measured``       measured transcriptome → transcriptome–text     ``text_emb_measured``
                   space (slides with counts; an upper bound)
``plip``           H&E tile → PLIP image–text space                ``image_text_emb_plip``
``conch``          H&E tile → CONCH image–text space               ``image_text_emb_conch``
``image_vec``      H&E → pooled image vector (search by example)   ``image_vec``
``fused``          the weighted fusion of the routes above         (search / bench only)
=================  ==============================================  ===================================

These are the names in ``configs/search.yaml`` (``weights:``), the index's routes
(``configs/index.yaml``, ``manifest.json``, ``shards/<id>/<route>.faiss``), the bench's columns and
the UI's route toggles. Index routes may also hold image features (``features_<model>``). Collections
written before this vocabulary used other names on disk (:data:`LEGACY_INDEX_ROUTES`); they open as
they are (:func:`canonical_route`), and the bench reads its older result files the same way
(:data:`LEGACY_BENCH_ROUTES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TRANSCRIPTOME = "transcriptome"
IMAGE = "image"
PROTEIN = "protein"
MEASURED = "measured"
PLIP = "plip"
CONCH = "conch"
FUSED = "fused"
IMAGE_VEC = "image_vec"  #: search by example: the pooled image vector of a spot (no text space)

#: routes that score a spot through the transcriptome–text space (one text model embeds the query)
TEXT_SPACE_ROUTES = (TRANSCRIPTOME, IMAGE, MEASURED)
#: image–text models with their own text space
CLIP_ROUTES = (PLIP, CONCH)
#: every route the search engine fuses, in the order answers list them
SEARCH_ROUTES = (TRANSCRIPTOME, IMAGE, PROTEIN, MEASURED, PLIP, CONCH)

#: index route names of collections written before the one vocabulary → the route
LEGACY_INDEX_ROUTES = {"text": TRANSCRIPTOME, "image_text_aligned": IMAGE, "text_measured": MEASURED,
                       "image_text_plip": PLIP, "image_text_conch": CONCH}
#: bench route names of result files written before the one vocabulary → the route
LEGACY_BENCH_ROUTES = {"inferred": TRANSCRIPTOME, "aligned": IMAGE, "proteins": PROTEIN,
                       "inferred_heldout": f"{TRANSCRIPTOME}_heldout"}


def canonical_route(name: str) -> str:
    """The route's name in the one vocabulary: an older index or bench name (``text``, ``inferred`` …)
    becomes its route (``transcriptome``); any other name is returned as it is."""
    return LEGACY_INDEX_ROUTES.get(name, LEGACY_BENCH_ROUTES.get(name, name))


@dataclass
class ZeroShotScores:
    """One route's zero-shot answer: ``n`` spots (or tiles) against ``Q`` queries.

    ``similarity`` ``(n, Q)`` cosine in [-1, 1] (NaN rows = not embedded); ``probabilities`` ``(n, Q)``
    softmax of ``similarity × logit_scale`` over the queries (and ``background`` terms, which compete but
    get no column; rows sum to 1 only without them; all 1 for a single query — rank by ``similarity``
    then); ``logits`` and ``zscores`` (cosine standardised per query over the spots) are derived.
    """

    queries: list[str]
    similarity: np.ndarray
    probabilities: np.ndarray
    logit_scale: float
    obs_names: list[str] | None = None  #: spot names (``adata.obs_names``) when scored from an AnnData
    text_embeddings: np.ndarray | None = None  #: ``(Q, D)`` query embeddings, when kept
    background: list[str] = field(default_factory=list)

    @property
    def logits(self) -> np.ndarray:
        """``similarity × logit_scale`` ``(n, Q)``."""
        return (self.similarity * self.logit_scale).astype(self.similarity.dtype, copy=False)

    @property
    def zscores(self) -> np.ndarray:
        """Cosine standardised per query over the spots with finite rows ``(n, Q)``; a constant query gives 0."""
        x = self.similarity
        ok = np.isfinite(x).all(axis=1)
        if not ok.any():
            return np.full_like(x, np.nan)
        mean, std = x[ok].mean(axis=0, keepdims=True), x[ok].std(axis=0, keepdims=True)
        return np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0.0).astype(x.dtype, copy=False)

    def best(self) -> np.ndarray:
        """Index of the most probable query per spot ``(n,)``; -1 where a spot has no embedding."""
        ok = np.isfinite(self.similarity).all(axis=1)
        return np.where(ok, np.argmax(np.nan_to_num(self.similarity, nan=-np.inf), axis=1), -1)

    def to_frame(self, kind: str = "probabilities"):
        """``pandas.DataFrame`` (spots × queries) of ``probabilities`` or ``similarity``."""
        import pandas as pd

        return pd.DataFrame(getattr(self, kind), index=self.obs_names, columns=self.queries)
