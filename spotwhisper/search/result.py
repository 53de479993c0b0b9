"""What a search returns: per slide the routes' raw scores, their relevance (absolute, see
:mod:`spotwhisper.search.relevance`), the fused relevance, regions and explanations; and for the
whole query the threshold, its unit and false-region rate, and whether anything was found —
what a UI needs to draw an honest map (an empty overlay and a sentence when nothing matches)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from .candidates import Specificity
from .explain import Explanation
from .query import ParsedQuery
from .regions import Region
from .relevance import UNIT


@dataclass
class SlideHits:
    """One slide's answer: raw route scores ``(n,)`` (cosines, protein levels), their relevance
    (``calibrated``), the fused relevance, regions, and a ``caveat`` when the slide is answered with
    a sentence instead of a map (a named marker or gene without signal there)."""

    slide: str
    adata: ad.AnnData
    routes: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    fused: np.ndarray
    regions: list[Region] = field(default_factory=list)
    explanation: Explanation | None = None
    attributions: pd.DataFrame | None = None
    caveat: str | None = None
    #: low-confidence candidate areas (no region at the threshold on a slide unlike the training slides)
    candidates: list[Region] = field(default_factory=list)
    #: the candidates tested against the slide's other learned concepts (``search.candidates.Specificity``)
    specificity: Specificity | None = None

    @property
    def familiarity(self) -> dict:
        """How familiar the slide is to the image models (``uns["familiarity"]``; empty when not measured)."""
        return dict(self.adata.uns.get(keys.FAMILIARITY, {}) or {})

    @property
    def confidence(self) -> str:
        """``"calibrated"`` on a slide like the training slides (or not measured), else ``"low"``."""
        return "low" if self.familiarity.get("level", "familiar") != "familiar" else "calibrated"

    @property
    def found(self) -> bool:
        """True when at least one region matches."""
        return bool(self.regions)

    @property
    def best_spot(self) -> float:
        """Highest fused relevance of any spot (``-inf`` when none is scored)."""
        return float(np.nanmax(self.fused)) if np.isfinite(self.fused).any() else float("-inf")

    @property
    def best(self) -> float:
        """Ranking score of the slide: its strongest region, else its best spot."""
        if self.regions:
            return max(r.mean_score for r in self.regions)
        return self.best_spot

    def no_region_reason(self, threshold: float, query: str | None = None, listed: int = 3) -> str:
        """"no region of <slide> matches '<query>'" with the best spot's relevance (or the caveat)."""
        if self.caveat:
            return self.caveat
        what = f" matches '{query}'" if query else " reaches the threshold"
        if not np.isfinite(self.fused).any():
            return f"no region of {self.slide}{what} (no spot could be scored)"
        n_hot = int(np.nansum(self.fused >= threshold))
        tail = (f"; {n_hot} isolated spot(s) reach the threshold but no group of adjacent spots does" if n_hot else "")
        head = "no confident region" if self.candidates else "no region"
        out = f"{head} of {self.slide}{what}: best spot {self.best_spot:.2f} (threshold {threshold:g}){tail}"
        sentence = self.familiarity.get("sentence") or "this slide is unlike the slides the models learned from"
        if self.candidates:
            parts = [f"candidate {r.id}: {r.n_spots} spots, mean score {r.mean_score:.2f}" for r in self.candidates[:listed]]
            out += (f". {sentence[0].upper()}{sentence[1:]}, so the {len(self.candidates)} best-ranked area(s) are "
                    f"shown as low-confidence candidates, not findings — {'; '.join(parts)}"
                    + (f"; {len(self.candidates) - listed} more" if len(self.candidates) > listed else ""))
        if self.specificity is not None:
            out += (". " if self.candidates else f". {sentence[0].upper()}{sentence[1:]}; ") + \
                self.specificity.sentence(query or "the query")
        return out

    def top_spots(self, n: int = 12) -> pd.DataFrame:
        order = np.argsort(-np.nan_to_num(self.fused, nan=-np.inf))[:n]
        xy = np.asarray(self.adata.obsm[keys.SPATIAL])[order]
        table = pd.DataFrame({"slide": self.slide, "spot": self.adata.obs_names[order], "score": self.fused[order],
                              "x": xy[:, 0], "y": xy[:, 1]})
        for r, s in self.routes.items():
            table[r] = s[order]
        if keys.LABEL in self.adata.obs:
            table["label"] = self.adata.obs[keys.LABEL].astype(str).to_numpy()[order]
        return table

    def region_ids(self) -> np.ndarray:
        """Region id of every spot ``(n,)`` int64 (0 = in no region)."""
        region = np.zeros(len(self.fused), dtype=np.int64)
        for r in self.regions:
            region[r.spots] = r.id
        return region

    def spot_table(self) -> pd.DataFrame:
        """Every spot with its raw route scores, route relevance, fused relevance and region id (0 = none)."""
        xy = np.asarray(self.adata.obsm[keys.SPATIAL])
        table = pd.DataFrame({"slide": self.slide, "spot": self.adata.obs_names, "x": xy[:, 0], "y": xy[:, 1],
                              "fused": self.fused, "region": self.region_ids()})
        for r, s in self.routes.items():
            table[f"score_{r}"] = s
        for r, s in self.calibrated.items():
            table[f"relevance_{r}"] = s
        return table


@dataclass
class SearchResult:
    """Answer to one query over one or more slides, best slide first.

    ``threshold`` is in ``unit`` (relevance log-odds; a spot at or above it is a hit) and
    ``false_region_rate`` is the share of (unrelated query, slide) pairs that reach a region at the
    configured threshold (measured by ``spotwhisper bench relevance``). ``readable`` is False for a
    query the text encoder cannot read: then nothing is scored and no map is drawn.
    """

    query: ParsedQuery
    slides: list[SlideHits]
    routes: list[str]
    notes: list[str] = field(default_factory=list)
    threshold: float = -1.0
    unit: str = UNIT
    false_region_rate: float | None = None
    readable: bool = True
    message: str | None = None  #: why nothing was scored (an unreadable query)
    example: object | None = None  #: a search by example: its :class:`~.example.ExampleQuery` (None for text)

    @property
    def found(self) -> bool:
        """True when any slide has a region."""
        return any(h.found for h in self.slides)

    def without_regions(self) -> list[str]:
        """Slides where nothing matches."""
        return [h.slide for h in self.slides if not h.found]

    def what(self) -> str:
        q = self.query
        return f"'{q.positive}'" + (f" minus '{q.negative}'" if q.negative else "")

    def summary(self, max_regions: int = 3) -> str:
        """The answer in sentences with numbers."""
        if not self.readable:
            return "\n".join([f"Cannot read this query: {self.message} No map is drawn; rephrase it in English words, "
                              "e.g. 'tertiary lymphoid structures' or 'immune cells next to tumour'.", *self.notes])
        lines = [f"Searched {self.what()} on {len(self.slides)} slide(s) with routes {', '.join(self.routes)}; "
                 f"a spot matches at {self.unit} ≥ {self.threshold:g}"
                 + (f" (unrelated queries reach a region on {self.false_region_rate:.0%} of slides)."
                    if self.false_region_rate is not None else ".")]
        for hits in self.slides:
            if not hits.regions:
                lines.append(f"{hits.slide}: {hits.no_region_reason(self.threshold, self.what().strip(chr(39)))}.")
                if hits.candidates and hits.explanation is not None:
                    lines.append(f"  why (candidate areas vs rest of slide): {hits.explanation.sentence(5)}.")
                continue
            n_hot = int(np.nansum(hits.fused >= self.threshold))
            parts = [f"region {r.id}: {r.n_spots} spots, {r.area_um2 / 1e6:.2f} mm², mean score {r.mean_score:.2f}"
                     for r in hits.regions[:max_regions]]
            lines.append(f"{hits.slide}: {len(hits.regions)} region(s), {n_hot} spots at or above {self.threshold:g} — "
                         + "; ".join(parts) + ".")
            if hits.explanation is not None:
                lines.append(f"  why (region 1 vs rest of slide): {hits.explanation.sentence(5)}.")
            if hits.confidence == "low":
                lines.append(f"  {hits.slide}: {hits.familiarity.get('sentence', '')}"
                             + (f"; {hits.specificity.sentence(self.what().strip(chr(39)))}." if hits.specificity else "."))
        missing = self.without_regions()
        if len(self.slides) > 1:
            lines.append(f"No region matches {self.what()} on {len(missing)} of {len(self.slides)} slides: {', '.join(missing)}."
                         if missing else f"Every one of the {len(self.slides)} slides has a region.")
        lines.extend(self.notes)
        return "\n".join(lines)
