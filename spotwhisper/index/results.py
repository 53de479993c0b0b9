"""Search results: scores and ids per query, with the metadata rows of the hits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metadata import ID


@dataclass
class IndexHits:
    """Top-``k`` hits of ``q`` queries in one route.

    ``scores`` ``(q, k)`` float32 cosine similarities (``-inf`` where fewer than ``k`` hits);
    ``ids`` ``(q, k)`` int64 vector ids (``-1`` = no hit); ``hits`` one row per real hit with
    columns ``query``, ``rank``, ``score``, ``id`` and the metadata (slide, spot, x, y, tile box …).
    """

    route: str
    scores: np.ndarray
    ids: np.ndarray
    hits: pd.DataFrame

    def __len__(self) -> int:
        return len(self.scores)

    def for_query(self, i: int) -> pd.DataFrame:
        """Hits of query ``i``, best first."""
        return self.hits[self.hits["query"] == i].reset_index(drop=True)


def make_hits(route: str, scores: np.ndarray, ids: np.ndarray, metadata: pd.DataFrame) -> IndexHits:
    """Attach the rows of ``metadata`` (indexed by id) to the hits ``ids``."""
    query, rank = np.nonzero(ids >= 0)
    hit_ids = ids[query, rank]
    rows = metadata.reindex(hit_ids).reset_index(names=ID)
    hits = pd.concat(
        [pd.DataFrame({"query": query, "rank": rank, "score": scores[query, rank]}), rows],
        axis=1,
    )
    return IndexHits(route, scores, ids, hits)
