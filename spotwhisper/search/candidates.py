"""Low-confidence candidates: what a slide unlike the training slides gets instead of a confident
"nothing here" for a concept the models learned.

The absolute relevance threshold was chosen on slides like the training slides; on a slide whose
familiarity (``uns["familiarity"]``, :mod:`spotwhisper.expression.familiarity`) is ``unusual`` or
``foreign`` a present concept often stays below it while its ranking still carries signal. There a
query for a concept the models learned — a vocabulary term or synonym, a protein marker, a gene of
the inferred panel — that finds no region is answered with the slide's best-ranked areas, marked
as low-confidence candidates (``SlideHits.candidates``), never as regions. A concept the models never
learned (another organ's cell type, nonsense) still comes back empty: its ranking means nothing.

Candidates are then tested against the slide's other learned concepts (:func:`specificity`): how far
the candidate areas stand out for the query (standardised mean difference of its relevance inside
them against the rest of the slide) beside how far they stand out for every other vocabulary term.
Areas that stand out clearly more for another concept ("breast glands" on kidney, whose best-ranked
areas stand out for epithelium and cancer) are not shown; the concepts that stand out about as much
are named in the answer ("the models cannot tell these apart on this slide").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np

from .. import keys
from ..prompts import Vocabulary, normalize_text
from .config import CandidateConfig
from .query import ParsedQuery
from .regions import Region


#: other learned concepts kept in a :class:`Specificity` (strongest first)
MAX_RIVALS = 5
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


@dataclass
class Specificity:
    """How specific a slide's candidate areas are to the query (standardised mean differences, see
    :func:`standout`): the query's, the strongest other learned concept's, and the concepts the models cannot
    tell from the query there (within the margin), strongest first."""

    query: float
    best_rival: tuple[str, float] | None = None
    rivals: list[tuple[str, float]] = field(default_factory=list)
    kept: bool = True  #: passed the test (candidates that fail it are not shown; regions always are)
    areas: str = "candidates"  #: what was tested: "candidates", or "regions" (found at the threshold)

    def sentence(self, query: str) -> str:
        """One plain sentence for the answer."""
        if not self.kept:
            other = self.rivals or ([self.best_rival] if self.best_rival else [])
            names = ", ".join(f"'{n}'" for n, _ in other[:3])
            if self.areas == "regions":
                return (f"these regions stand out more for {names} than for '{query}': on this slide the models may "
                        "not tell them apart")
            return (f"its best-ranked areas stand out more for {names} than for '{query}', so none is shown: the models "
                    "see no sign of it on this slide they can point to")
        if self.rivals:
            names = ", ".join(f"'{n}'" for n, _ in self.rivals[:3])
            return f"these {self.areas} stand out about as much for {names}: the models cannot tell these apart on this slide"
        return f"these {self.areas} stand out for '{query}' more than for any other concept the models learned"

    def to_dict(self) -> dict:
        """Plain record (JSON- and ``.h5ad``-writable): standardised mean differences rounded to 3 decimals."""
        best, z = self.best_rival or ("", float("nan"))
        return {"query_standout": round(self.query, 3), "kept": self.kept, "best_rival": best,
                "best_rival_standout": round(z, 3), "rivals": [n for n, _ in self.rivals],
                "rivals_standout": [round(v, 3) for _, v in self.rivals], "areas": self.areas}


def standout(values: np.ndarray, inside: np.ndarray) -> float:
    """Standardised mean difference of ``values`` ``(n,)`` inside the bool mask ``inside`` against the rest:
    (mean inside − mean outside) / standard deviation over the slide (NaN spots ignored)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    a, b = v[ok & inside], v[ok & ~inside]
    sd = float(np.std(v[ok])) if ok.sum() > 1 else 0.0
    if not len(a) or not len(b) or sd <= 0:
        return float("nan")
    return float((a.mean() - b.mean()) / sd)


def specificity(query_relevance: np.ndarray, terms: Sequence[str], term_relevance: np.ndarray, inside: np.ndarray,
                exclude: set[str], margin: float, areas: str = "candidates") -> Specificity:
    """Test the areas ``inside`` (bool ``(n,)``) of a query with relevance ``query_relevance`` ``(n,)`` against
    every vocabulary term (``term_relevance`` ``(n, T)``, columns named ``terms``) but those in ``exclude`` (the
    query's own terms and their parts, ``QueryScorer.related_terms``): kept unless the areas stand out less for
    the query than ``margin`` below the strongest rival, or not at all; rivals = terms within ``margin`` of the
    query or above it. ``areas`` names what is tested ("candidates" or "regions") for the answer's sentence."""
    z = standout(query_relevance, inside)
    scores = sorted(((t, standout(term_relevance[:, k], inside)) for k, t in enumerate(terms) if t not in exclude),
                    key=lambda p: -np.nan_to_num(p[1], nan=-np.inf))
    scores = [(t, s) for t, s in scores if np.isfinite(s)]
    best = scores[0] if scores else None
    if not np.isfinite(z):
        return Specificity(float("nan"), best, [], kept=True, areas=areas)
    rivals = [(t, s) for t, s in scores if s >= z - margin][:MAX_RIVALS]
    kept = z > 0 and (best is None or z >= best[1] - margin)
    return Specificity(z, best, rivals, kept, areas)


def check_areas(hits, parsed: ParsedQuery, scorer, weights: dict[str, float], margin: float) -> None:
    """Run :func:`specificity` on the areas shown on an unfamiliar slide — its regions, else its candidates — of
    ``hits`` (a :class:`~spotwhisper.search.result.SlideHits`) with the query's and every vocabulary term's
    relevance over the embedding routes of ``scorer`` (:class:`~spotwhisper.search.scoring.QueryScorer`); sets
    ``hits.specificity`` and drops candidates that fail it, in place. Regions (at the calibrated threshold) are
    never dropped: their test only says which concepts the models cannot tell from the query there."""
    from .fusion import fuse

    areas = hits.regions or hits.candidates
    text_routes = {r: v for r, v in hits.calibrated.items() if r in scorer.spaces(hits.adata, weights)}
    if not areas or not text_routes:
        return
    terms, table = scorer.term_relevance(hits.slide, hits.adata, weights)
    if not terms:
        return
    inside = np.zeros(hits.adata.n_obs, dtype=bool)
    for r in areas:
        inside[np.asarray(r.spots)] = True
    hits.specificity = specificity(fuse(text_routes, weights), terms, table, inside,
                                   scorer.related_terms(parsed, hits.adata.var_names), margin,
                                   "regions" if hits.regions else "candidates")
    if not hits.specificity.kept and not hits.regions:
        hits.candidates = []
