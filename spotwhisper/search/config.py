"""Search settings (``configs/search.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..routes import CONCH, IMAGE, MEASURED, PLIP, PROTEIN, TRANSCRIPTOME


@dataclass
class RelevanceConfig:
    """Absolute relevance (:mod:`spotwhisper.search.relevance`): the reference descriptions, the
    threshold in calibrated units and the false-region rate measured for it."""

    #: reference descriptions besides every vocabulary term (generic tissue descriptions)
    background: list[str] = field(default_factory=lambda: [
        "tissue", "a tissue section", "cells", "a spot of tissue", "normal tissue", "mixed tissue",
        "some cells and stroma", "a histology slide", "tissue with several cell types", "background tissue",
        "low quality spot", "sparse tissue"])
    use_vocabulary: bool = True  #: also every vocabulary term (configs/vocabulary.yaml) as a reference
    synonym_similarity: float = 0.92  #: references this close to the query (cosine) count with it
    threshold: float = -1.0  #: log-odds at which a spot is a hit
    #: measured by `spotwhisper bench relevance` at this threshold: unrelated queries (other organs,
    #: nonsense) that get a region, as a share of (query, slide) pairs; stated in answers
    false_region_rate: float = 0.01
    protein_hit_quantile: float = 0.9  #: a marker level at this reference quantile maps onto the threshold
    min_gene_range: float = 0.05  #: a named gene whose log1p level spans less (1st–99th percentile) has no signal


@dataclass
class CandidateConfig:
    """Low-confidence candidates: on a slide unlike the training slides (its familiarity level in
    ``levels``), a query for a concept the models learned (a vocabulary term or synonym, a protein
    marker or a gene) that finds no region at the threshold is answered with the best-ranked areas,
    marked as low confidence — not with a confident "nothing here" that the calibration, chosen on
    the training slides, cannot back there. Concepts the models never learned still come back empty."""

    levels: list[str] = field(default_factory=lambda: ["unusual", "foreign"])  #: familiarity levels that get candidates
    top_fraction: float = 0.10  #: candidate spots are among the slide's best-ranked share …
    margin: float = 2.0  #: … and within this many log-odds of its best spot
    max_regions: int = 20  #: at most this many candidate areas are kept (strongest first)
    listed: int = 3  #: … and this many described in the answer
    min_coverage: float = 0.5  #: a query is a learned concept when vocabulary names cover this share of its words
    #: candidate areas must stand out for the query (standardised mean difference) no less than this below the
    #: strongest other learned concept; concepts within it are named as ones the models cannot tell apart there
    rival_margin: float = 0.5


@dataclass
class LikeConfig:
    """Search by example (:mod:`spotwhisper.search.example`): route weights and the hit level's bounds."""

    #: fused = weighted mean of the example routes' relevance (0 switches one off)
    weights: dict[str, float] = field(default_factory=lambda: {"image_vec": 1.0, "transcriptome": 1.0, "image": 1.0})
    hit_quantile: float = 0.9  #: one-spot example: the example slide's cosine quantile that sits at the threshold
    min_hit_quantile: float = 0.5  #: the hit level is never below this quantile of the example slide's cosines
    nearest: int = 20  #: spots the FAISS index lists as the nearest to an example (CLI, API)


@dataclass
class SearchConfig:
    """Route weights, relevance, region rule and limits."""

    weights: dict[str, float] = field(
        default_factory=lambda: {TRANSCRIPTOME: 1.0, IMAGE: 0.5, PROTEIN: 0.75, MEASURED: 0.0, PLIP: 0.5, CONCH: 0.5}
    )  #: fused = weighted mean of the routes' relevance; 0 switches a route off
    relevance: RelevanceConfig = field(default_factory=RelevanceConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    min_region_spots: int = 2  #: smaller connected groups are not reported as regions
    link: float = 1.5  #: spots within this many spot spacings join one region
    top_spots: int = 12  #: best spots listed per query
    top_genes: int = 10  #: genes / proteins listed in an explanation
    max_query_chars: int = 300
    max_slide_cache: int = 16  #: slides kept in memory by the engine
    prefilter_slides: int = 32  #: a collection with more slides is first narrowed to this many by FAISS (0 = never)
    prefilter_k: int = 2000  #: spots the FAISS text route returns for that narrowing
    like: LikeConfig = field(default_factory=LikeConfig)  #: search by example

    @property
    def threshold(self) -> float:
        """The hit threshold (relevance log-odds), ``relevance.threshold``."""
        return self.relevance.threshold
