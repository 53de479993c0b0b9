"""The search engine: a free-text query → per-spot scores by every route → fused map → regions,
top spots and explanations, over one slide or a whole collection.

Routes (``configs/search.yaml`` weights):

* ``transcriptome`` — inferred expression embedded by the transcriptome–text model (``obsm["text_emb"]``)
* ``image`` — the aligned image head in the same space (``obsm["image_text_emb_aligned"]``)
* ``protein`` — virtual protein levels of the markers the query names (``obsm["proteins"]``)
* ``measured`` — measured expression, when a slide has counts (``obsm["text_emb_measured"]``)
* ``plip`` / ``conch`` — image–text models, when the collection was built with them

Route scores are calibrated over all searched spots (z-scores by default) and fused by weight;
"A minus B" subtracts B's route scores from A's before calibration.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..collection import OpenedCollection, SlideStore, open_collection
from ..index import CollectionIndex
from ..io.spatial import spot_spacing
from ..language import TextExpressionModel, UnreadableQueryWarning
from ..language.expression_encoder import expression_input
from ..language.transcriptome_zeroshot import embed_queries_for_spots, unreadable_query
from ..prompts import load_vocabulary
from ..proteins import find_marker
from .attribution import gene_attributions
from .config import SearchConfig
from .explain import Explanation, explain_spots
from .fusion import calibrate, fuse
from .query import MarkerMention, ParsedQuery, parse_query
from .regions import Region, find_regions

log = logging.getLogger(__name__)

#: route → obsm key of its spot embeddings (text space routes)
EMBEDDING_ROUTES = {
    "transcriptome": keys.TEXT_EMB,
    "image": f"{keys.IMAGE_TEXT_EMB_PREFIX}aligned",
    "measured": "text_emb_measured",
}
CLIP_ROUTES = {"plip": f"{keys.IMAGE_TEXT_EMB_PREFIX}plip", "conch": f"{keys.IMAGE_TEXT_EMB_PREFIX}conch"}


@dataclass
class SlideHits:
    """One slide's answer: raw and calibrated route scores ``(n,)``, fused score, regions, top spots."""

    slide: str
    adata: ad.AnnData
    routes: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    fused: np.ndarray
    regions: list[Region] = field(default_factory=list)
    explanation: Explanation | None = None
    attributions: pd.DataFrame | None = None

    @property
    def best(self) -> float:
        """Ranking score of the slide: its strongest region, else its best spot."""
        if self.regions:
            return max(r.mean_score for r in self.regions)
        return float(np.nanmax(self.fused)) if np.isfinite(self.fused).any() else float("-inf")

    def no_region_reason(self, threshold: float) -> str:
        """Why there is no region at ``threshold``: no spot reaches it, or only isolated spots do."""
        n_hot = int(np.nansum(self.fused >= threshold))
        best = f"best spot {np.nanmax(self.fused):.2f}" if np.isfinite(self.fused).any() else "no scored spot"
        if n_hot:
            return (f"no region scores above the threshold ({threshold:g}): {n_hot} isolated spot(s) reach it "
                    f"({best}) but no group of adjacent spots does")
        return f"no region scores above the threshold ({threshold:g}); {best}"

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

    def spot_table(self) -> pd.DataFrame:
        """Every spot with its route scores, fused score and region id (0 = none)."""
        xy = np.asarray(self.adata.obsm[keys.SPATIAL])
        region = np.zeros(len(self.fused), dtype=int)
        for r in self.regions:
            region[r.spots] = r.id
        table = pd.DataFrame({"slide": self.slide, "spot": self.adata.obs_names, "x": xy[:, 0], "y": xy[:, 1],
                              "fused": self.fused, "region": region})
        for r, s in self.routes.items():
            table[f"score_{r}"] = s
        return table


@dataclass
class SearchResult:
    """Answer to one query over one or more slides, best slide first."""

    query: ParsedQuery
    slides: list[SlideHits]
    routes: list[str]
    notes: list[str] = field(default_factory=list)
    threshold: float = 1.5

    def summary(self, max_regions: int = 3) -> str:
        """The answer in sentences with numbers."""
        q = self.query
        what = f"'{q.positive}'" + (f" minus '{q.negative}'" if q.negative else "")
        lines = [f"Searched {what} on {len(self.slides)} slide(s) with routes {', '.join(self.routes)}."]
        for hits in self.slides:
            n_hot = int(np.nansum(hits.fused >= self.threshold))
            if not hits.regions:
                lines.append(f"{hits.slide}: {hits.no_region_reason(self.threshold)}. Scores are z-scores over the searched spots, "
                             "so a match spread over most of the tissue has no stand-out region: lower the "
                             "threshold, or search it against another query ('A minus B').")
                continue
            parts = [f"region {r.id}: {r.n_spots} spots, {r.area_um2 / 1e6:.2f} mm², mean score {r.mean_score:.2f}"
                     for r in hits.regions[:max_regions]]
            lines.append(f"{hits.slide}: {len(hits.regions)} region(s), {n_hot} spots above {self.threshold:g} — " + "; ".join(parts) + ".")
            if hits.explanation is not None:
                lines.append(f"  why (region 1 vs rest of slide): {hits.explanation.sentence(5)}.")
        lines.extend(self.notes)
        return "\n".join(lines)


class SearchEngine:
    """Search slides (AnnData from :func:`spotwhisper.pipeline.process_slide`) with free text.

    One engine serves many threads (the UI's sessions): searching never changes it, and its caches
    (slide files, the text model's input matrices, query embeddings) are guarded by locks.
    :meth:`overlay` gives a view with extra slides (one session's uploads) that shares them.
    """

    def __init__(self, slides: dict[str, ad.AnnData] | None = None, text_model: TextExpressionModel | None = None,
                 cfg: SearchConfig | None = None, image_text_models: dict | None = None, store: SlideStore | None = None,
                 index: CollectionIndex | None = None):
        from ..config import load_config

        self.cfg = cfg or load_config(SearchConfig, "search")
        self.text = text_model or TextExpressionModel.from_pretrained()
        self.image_text = image_text_models or {}
        self._slides = dict(slides or {})
        self.store = store
        self.index = index  #: the collection's CollectionIndex: FAISS narrows large collections (prefilter_*)
        self._inputs: OrderedDict[tuple[str, int], tuple[ad.AnnData, np.ndarray]] = OrderedDict()
        self._inputs_lock = threading.Lock()
        self.vocabulary = load_vocabulary()

    @classmethod
    def from_collection(cls, collection: OpenedCollection, **kwargs) -> SearchEngine:
        """A search engine over an opened collection (:func:`spotwhisper.collection.open_collection`):
        its slide files, its FAISS indexes and the text model its text route was checked against."""
        return cls(store=collection.store, text_model=collection.text_model, index=collection.index, **kwargs)

    # -- slides ---------------------------------------------------------------------------
    def slide_names(self) -> list[str]:
        """Slides held in memory, then the collection's: those its manifest lists and that have a
        slide file (a file the manifest does not list yet — an add in progress — is not searched)."""
        names = list(self._slides)
        if self.store is not None:
            names += [s for s in self.store.slides() if s not in self._slides and self._listed(s)]
        return names

    def _listed(self, name: str) -> bool:
        return self.index is None or name in self.index.manifest.slides()

    def slide(self, name: str) -> ad.AnnData:
        if name in self._slides:
            return self._slides[name]
        if self.store is not None and self._listed(name):
            return self.store.get(name)
        raise KeyError(f"no slide {name!r} (slides: {', '.join(self.slide_names()) or 'none'})")

    def add_slide(self, name: str, adata: ad.AnnData) -> None:
        """Add a slide held in memory to this engine (every user of the engine sees it; a server
        adds one session's slides with :meth:`overlay` instead)."""
        self._slides[name] = adata

    def overlay(self, slides: Mapping[str, ad.AnnData]) -> SearchEngine:
        """A view of this engine that also searches ``slides`` (name → AnnData; a name of the
        collection is shadowed). The view shares the collection, models and caches and leaves this
        engine as it was, so other users never see ``slides``."""
        view = copy.copy(self)
        view._slides = {**self._slides, **slides}
        return view

    def _candidate_slides(self, parsed: ParsedQuery) -> tuple[list[str], str | None]:
        """Every slide, or — in a collection of more than ``cfg.prefilter_slides`` slides with a FAISS
        text route — the slides holding the ``cfg.prefilter_k`` spots nearest the query (best first,
        at most ``prefilter_slides``; slides added in this session are always kept), with a note."""
        names, n = self.slide_names(), self.cfg.prefilter_slides
        if self.index is None or not n or len(names) <= n or "text" not in self.index.routes():
            return names, None
        q = embed_queries_for_spots(self.text, [parsed.positive], check=False)[0]  # only the text route is indexed for this
        found = self.index.search("text", q[None], k=min(self.cfg.prefilter_k, len(self.index))).hits
        best = found.groupby("slide")["score"].max().sort_values(ascending=False).index
        keep = [s for s in best if s in set(names)][:n] + list(self._slides)
        keep = list(dict.fromkeys(keep))
        return keep, (f"FAISS (text route) narrowed the search to {len(keep)} of {len(names)} slides, those holding "
                      f"the {self.cfg.prefilter_k} spots nearest the query; z-scores are over those slides.")

    # -- scoring ----------------------------------------------------------------------------
    def _query_vectors(self, text: str) -> dict[str, np.ndarray]:
        out = {"text": embed_queries_for_spots(self.text, [text], check=False)[0]}
        for name, model in self.image_text.items():
            from ..imagetext.tile_zeroshot import embed_queries_for_tiles

            out[name] = embed_queries_for_tiles(model, [text])[0]
        return out

    def _protein_scores(self, adata: ad.AnnData, mentions: list[MarkerMention], fallback: list[str]) -> np.ndarray | None:
        if keys.PROTEINS not in adata.obsm:
            return None
        markers = [str(m) for m in adata.uns.get(keys.PROTEIN_MARKERS, [])]
        levels = np.asarray(adata.obsm[keys.PROTEINS], dtype=np.float64)
        picks = [(markers.index(m.marker), m.sign) for m in mentions if m.marker in markers]
        if not picks:
            picks = [(markers.index(n), 1) for n in (find_marker(p) for p in fallback) if n in markers]
        cols = [(i, s) for i, s in picks if np.isfinite(levels[:, i]).any()]
        if not cols:
            return None
        return np.nanmean(np.stack([s * levels[:, i] for i, s in cols]), axis=0)

    def route_scores(self, adata: ad.AnnData, parsed: ParsedQuery, weights: dict[str, float]) -> dict[str, np.ndarray]:
        """Raw per-spot scores ``(n,)`` of every route that can answer on ``adata``."""
        pos = self._query_vectors(parsed.positive)
        neg = self._query_vectors(parsed.negative) if parsed.negative else None
        out: dict[str, np.ndarray] = {}
        for route, key in {**EMBEDDING_ROUTES, **CLIP_ROUTES}.items():
            if weights.get(route, 0) <= 0 or key not in adata.obsm:
                continue
            qkey = "text" if route in EMBEDDING_ROUTES else route
            if qkey not in pos:
                continue
            emb = np.asarray(adata.obsm[key], dtype=np.float32)
            s = emb @ pos[qkey]
            if neg is not None:
                s = s - emb @ neg[qkey]
            out[route] = s.astype(np.float64)
        if weights.get("protein", 0) > 0:
            fallback = [p for t in parsed.terms for p in t.proteins]
            s = self._protein_scores(adata, parsed.markers, fallback)
            if s is not None and parsed.negative:
                neg_terms = self.vocabulary.find_in(parsed.negative)
                sn = self._protein_scores(adata, parsed.negative_markers, [p for t in neg_terms for p in t.proteins])
                s = s - sn if sn is not None else s
            if s is not None:
                out["protein"] = s
        return out

    def search(self, query: str, slides: list[str] | None = None, weights: dict[str, float] | None = None,
               threshold: float | None = None, explain: bool = True) -> SearchResult:
        """Score ``slides`` (default: all) for ``query``; regions per slide; slides ranked best first."""
        parsed = parse_query(query, self.cfg.max_query_chars, self.vocabulary)
        weights = {**self.cfg.weights, **(weights or {})}
        threshold = self.cfg.threshold if threshold is None else threshold
        names, prefilter_note = (slides, None) if slides else self._candidate_slides(parsed)
        if not names:
            raise ValueError("no slides to search: build a collection first (`spotwhisper index build`)")
        data = {n: self.slide(n) for n in names}
        unreadable = [m for m in dict.fromkeys(unreadable_query(self.text, t, self.vocabulary)
                                               for t in (parsed.positive, parsed.negative) if t) if m]
        for message in unreadable:  # said once per search (the query cache would hide repeats)
            warnings.warn(message, UnreadableQueryWarning, stacklevel=2)
        raw = {n: self.route_scores(a, parsed, weights) for n, a in data.items()}
        routes = sorted({r for s in raw.values() for r in s})
        if not routes:
            raise ValueError(f"no route can answer {query!r}: the slides lack embeddings and proteins")
        # calibrate each route over all searched spots together, so slides are comparable
        sizes = [data[n].n_obs for n in names]
        cal: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
        for r in routes:
            joined = np.concatenate([raw[n].get(r, np.full(sz, np.nan)) for n, sz in zip(names, sizes)])
            c = calibrate(joined, self.cfg.calibration)
            for n, part in zip(names, np.split(c, np.cumsum(sizes)[:-1])):
                if r in raw[n]:
                    cal[n][r] = part
        notes = [f"Note: {m}" for m in unreadable]
        if prefilter_note:
            notes.append(prefilter_note)
        if parsed.markers and "protein" not in routes:
            notes.append("Protein route: the named markers have no transcript proxy here, so it did not answer.")
        hits = [SlideHits(n, data[n], raw[n], cal[n], np.full(data[n].n_obs, np.nan)) for n in names]
        return self.reweight(SearchResult(parsed, hits, routes, notes, threshold), weights, threshold, explain)

    def reweight(self, base: SearchResult, weights: dict[str, float], threshold: float, explain: bool = True) -> SearchResult:
        """(Re-)fuse ``base``'s calibrated route scores with ``weights``, standardise the fused score over
        all searched spots (the threshold is in its z units), then regions, explanations and slide
        ranking. Re-weighting or a new threshold needs no new scoring."""
        used = sorted({r for h in base.slides for r in h.calibrated if weights.get(r, 0) > 0})
        if not used:
            raise ValueError(f"none of the selected routes answered this query (it was answered by {', '.join(base.routes)})")
        sizes = [h.adata.n_obs for h in base.slides]
        parts = [fuse(h.calibrated, weights, method="none") if set(h.calibrated) & set(used) else np.full(n, np.nan)
                 for h, n in zip(base.slides, sizes)]
        fused_all = calibrate(np.concatenate(parts), self.cfg.calibration)
        result = []
        for h, fused in zip(base.slides, np.split(fused_all, np.cumsum(sizes)[:-1])):
            hits = SlideHits(h.slide, h.adata, h.routes, h.calibrated, fused)
            hits.regions = self.regions(h.adata, fused, threshold)
            if explain and hits.regions:
                self.explain_hits(hits, base.query)
            result.append(hits)
        result.sort(key=lambda s: -s.best)
        return SearchResult(base.query, result, used, list(base.notes), threshold)

    def regions(self, adata: ad.AnnData, fused: np.ndarray, threshold: float) -> list[Region]:
        """Connected regions of spots with ``fused >= threshold`` on one slide."""
        lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
        sf = adata.uns[keys.SPATIAL][lib]["scalefactors"] if lib else {}
        coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
        spacing = spot_spacing(adata)
        mpp = float(sf.get(keys.MPP, 1.0))
        return find_regions(coords, fused, threshold, spacing, spacing, mpp, self.cfg.link, self.cfg.min_region_spots)

    def explain_hits(self, hits: SlideHits, parsed: ParsedQuery) -> None:
        """Explain the strongest region of ``hits`` (region vs rest; gene attributions), in place."""
        hits.explanation = self._contrast(hits.adata, hits.regions[0].spots)
        if keys.TEXT_EMB in hits.adata.obsm:
            q = embed_queries_for_spots(self.text, [parsed.positive], check=False)[0]
            hits.attributions = gene_attributions(self.text, hits.adata, hits.regions[0].spots, q, self.cfg.top_genes,
                                                  inputs=self._text_inputs(hits.slide, hits.adata))

    def _text_inputs(self, slide: str, adata: ad.AnnData) -> np.ndarray:
        """The text model's standardised input matrix of a slide, computed once per slide object
        (an LRU of ``cfg.max_slide_cache`` slides; thread-safe)."""
        key = (slide, id(adata))
        with self._inputs_lock:
            cached = self._inputs.get(key)
            if cached is not None and cached[0] is adata:
                self._inputs.move_to_end(key)
                return cached[1]
        matrix = expression_input(adata, self.text.genes, self.text.config.input)
        with self._inputs_lock:
            self._inputs[key] = (adata, matrix)
            while len(self._inputs) > max(1, self.cfg.max_slide_cache):
                self._inputs.popitem(last=False)
        return matrix

    def explain(self, slide: str, spots: np.ndarray) -> Explanation:
        """Genes and proteins of ``spots`` (indices or bool mask) versus the rest of ``slide``."""
        return self._contrast(self.slide(slide), spots)

    def _contrast(self, a: ad.AnnData, spots: np.ndarray) -> Explanation:
        inside = np.zeros(a.n_obs, dtype=bool)
        inside[np.asarray(spots)] = True
        x = a.layers["log1p"] if "log1p" in a.layers else a.X
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        prot = np.asarray(a.obsm[keys.PROTEINS]) if keys.PROTEINS in a.obsm else None
        markers = [str(m) for m in a.uns.get(keys.PROTEIN_MARKERS, [])] or None
        return explain_spots(inside, x, list(a.var_names), prot, markers, self.cfg.top_genes)


def open_engine(collection: str, index_dir: str | Path | None = None, text_model: TextExpressionModel | None = None,
                **engine_kwargs) -> SearchEngine:
    """A search engine over the built collection ``collection`` (see :func:`SearchEngine.from_collection`);
    raises ``ModelMismatchError`` when its text route was built with another transcriptome–text model
    than ``text_model`` (default: the shipped one)."""
    return SearchEngine.from_collection(open_collection(collection, index_dir, text_model), **engine_kwargs)
