"""Low-confidence candidates: what a slide unlike the training slides gets instead of a confident
"nothing here" for a concept the models learned.

The absolute relevance threshold was chosen on slides like the training slides; on a slide whose
familiarity (``uns["familiarity"]``, :mod:`spotwhisper.expression.familiarity`) is ``unusual`` or
``foreign`` a present concept often stays below it while its ranking still carries signal. There a
query for a concept the models learned — a vocabulary term or synonym, a protein marker, a gene of
the inferred panel — that finds no region is answered with the slide's best-ranked areas, marked
as low-confidence candidates (``SlideHits.candidates``), never as regions. A concept the models never
learned (another organ's cell type, nonsense) still comes back empty: its ranking means nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np

from .. import keys
from ..prompts import Vocabulary, normalize_text
from .config import CandidateConfig
from .query import ParsedQuery
from .regions import Region


#: words that carry no concept ("cells next to the tumour" is about cells and a tumour)
FILLER = frozenset("a an the of in at on to with and or next near around within from by high low rich region regions "
                   "area areas".split())


def term_coverage(text: str, vocabulary: Vocabulary) -> float:
    """Share of the content words of ``text`` that belong to a vocabulary term's name or synonym found in it
    as whole words ("gastric foveolar epithelium": 1 of 3, only "epithelium" is a learned concept)."""
    words = [w for w in normalize_text(text).split() if w not in FILLER]
    if not words:
        return 0.0
    covered: set[int] = set()
    for term in vocabulary.find_in(text):
        for name in map(normalize_text, term.names):
            n = name.split()
            for i in range(len(words) - len(n) + 1):
                if words[i:i + len(n)] == n:
                    covered.update(range(i, i + len(n)))
    return len(covered) / len(words)


def knows(parsed: ParsedQuery, vocabulary: Vocabulary, genes: Sequence[str], min_coverage: float = 0.5) -> bool:
    """Whether the query names a concept the models learned: a vocabulary term or synonym (exactly, or
    covering at least ``min_coverage`` of its content words), a protein marker of the panel, or a gene
    symbol of ``genes`` (the text model's panel)."""
    import pandas as pd

    from .scoring import named_genes

    if parsed.markers or vocabulary.lookup(parsed.positive) is not None:
        return True
    if term_coverage(parsed.positive, vocabulary) >= min_coverage:
        return True
    return bool(named_genes(parsed.positive, pd.Index(list(genes))))


def wants_candidates(adata: ad.AnnData, parsed: ParsedQuery, cfg: CandidateConfig, vocabulary: Vocabulary,
                     genes: Sequence[str]) -> bool:
    """Candidates replace "nothing here" only on a slide whose familiarity level is one of ``cfg.levels``,
    for a plain (not contrast) query of a concept the models learned (:func:`knows`)."""
    level = dict(adata.uns.get(keys.FAMILIARITY, {}) or {}).get("level", "familiar")
    return level in cfg.levels and not parsed.negative and knows(parsed, vocabulary, genes, cfg.min_coverage)


def candidate_regions(fused: np.ndarray, cfg: CandidateConfig, regions_at: Callable[[float], list[Region]]) -> list[Region]:
    """The best-ranked areas of a slide: spots among its top ``cfg.top_fraction`` of fused relevance ``(n,)`` and
    within ``cfg.margin`` log-odds of its best spot, joined like regions by ``regions_at(level)``; strongest first,
    at most ``cfg.max_regions``."""
    if not np.isfinite(fused).any():
        return []
    level = max(float(np.nanquantile(fused, 1 - cfg.top_fraction)), float(np.nanmax(fused)) - cfg.margin)
    return regions_at(level)[: cfg.max_regions]


def unlearned_note(parsed: ParsedQuery, slides: Sequence[ad.AnnData], cfg: CandidateConfig, vocabulary: Vocabulary,
                   genes: Sequence[str]) -> str | None:
    """The note for a query of a concept the models never learned, searched on a slide unlike the training
    slides: "no region" there means the models cannot tell, not that the concept is absent."""
    unfamiliar = [a for a in slides if dict(a.uns.get(keys.FAMILIARITY, {}) or {}).get("level", "familiar") in cfg.levels]
    if not unfamiliar or parsed.negative or knows(parsed, vocabulary, genes, cfg.min_coverage):
        return None
    return (f"'{parsed.positive}' names no concept the models learned (a vocabulary term, protein marker or gene); on "
            f"{len(unfamiliar)} slide(s) unlike the training slides, 'no region' for it means the models cannot tell, "
            "not that it is absent.")
