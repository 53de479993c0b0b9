"""Search settings (``configs/search.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchConfig:
    """Route weights, calibration, region thresholds and limits."""

    weights: dict[str, float] = field(
        default_factory=lambda: {"transcriptome": 1.0, "image": 0.5, "protein": 0.75, "measured": 0.0, "plip": 0.5, "conch": 0.5}
    )  #: fused = weighted mean of calibrated route scores; 0 switches a route off
    calibration: str = "zscore"  #: zscore | rank | none (see spotwhisper.search.fusion)
    threshold: float = 1.5  #: fused score (z units) at which a spot counts as a hit
    min_region_spots: int = 2  #: smaller connected groups are not reported as regions
    link: float = 1.5  #: spots within this many spot spacings join one region
    top_spots: int = 12  #: best spots listed per query
    top_genes: int = 10  #: genes / proteins listed in an explanation
    max_query_chars: int = 300
    max_slide_cache: int = 16  #: slides kept in memory by the engine
    prefilter_slides: int = 32  #: a collection with more slides is first narrowed to this many by FAISS (0 = never)
    prefilter_k: int = 2000  #: spots the FAISS text route returns for that narrowing
