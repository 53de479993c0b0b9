"""The search engine: a free-text query → per-spot scores by every route → fused map → regions,
top spots and explanations, over one slide or a whole collection.

Routes (``configs/search.yaml`` weights):

* ``transcriptome`` — inferred expression embedded by the transcriptome–text model (``obsm["text_emb"]``)
* ``image`` — the aligned image head in the same space (``obsm["image_text_emb_aligned"]``)
* ``protein`` — virtual protein levels of the markers the query names (``obsm["proteins"]``)
* ``measured`` — measured expression, when a slide has counts (``obsm["text_emb_measured"]``)
* ``plip`` / ``conch`` — image–text models, when the collection was built with them

Each route's per-spot score is calibrated against a null that does not come from the searched
slides (:mod:`spotwhisper.search.relevance`: the query against reference descriptions of tissue;
protein levels against a reference distribution), so a spot's relevance is the same whichever
slides are searched with it, and a query for something absent finds no region. The fused score is
the weighted mean of the routes' relevance; a region is a group of adjacent spots at or above the
threshold (``configs/search.yaml`` ``relevance.threshold``, in log-odds, with its measured
false-region rate). "A minus B" adds B to the competitors of A.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..genes import expression_matrix
from ..routes import PROTEIN, TRANSCRIPTOME
from .. import keys
from ..collection import DamagedSlideError, LiveCollection, OpenedCollection, SlideStore, open_collection
from ..collection.store import MISSING
from ..index import CollectionIndex
from ..io.spatial import spot_spacing
from ..language import TextExpressionModel, UnreadableQueryWarning
from ..language.expression_encoder import expression_input
from ..language.transcriptome_zeroshot import embed_queries_for_spots
from ..prompts import load_vocabulary
from .attribution import gene_attributions
from .candidates import candidate_regions, check_areas, unlearned_note, wants_candidates
from .legibility import reading, synonym_notes
from .config import SearchConfig
from .explain import Explanation, explain_spots
from .fusion import fuse
from .query import ParsedQuery, parse_query
from .regions import Region, find_regions
from .result import SearchResult, SlideHits
from .example import Example, ExampleQuery, like_scores, prototypes
from .scoring import CLIP_ROUTES, EMBEDDING_ROUTES, EXAMPLE_ROUTES, QueryScorer

__all__ = ["CLIP_ROUTES", "EMBEDDING_ROUTES", "EXAMPLE_ROUTES", "SearchEngine", "SearchResult", "SlideHits", "open_engine"]
#: what the relevance of a search by example is (``SearchResult.unit``)
LIKE_UNIT = "relevance (log-odds vs the example's slide)"

log = logging.getLogger(__name__)


class SearchEngine:
    """Search slides (AnnData from :func:`spotwhisper.pipeline.process_slide`) with free text.

    One engine serves many threads (the UI's sessions): searching never changes it, and its caches
    (slide files, the text model's input matrices, query embeddings) are guarded by locks.
    :meth:`overlay` gives a view with extra slides (one session's uploads) that shares them.
    """

    def __init__(self, slides: dict[str, ad.AnnData] | None = None, text_model: TextExpressionModel | None = None,
                 cfg: SearchConfig | None = None, image_text_models: dict | None = None, store: SlideStore | None = None,
                 index: CollectionIndex | None = None, live: LiveCollection | None = None):
        from ..config import load_config

        self.cfg = cfg or load_config(SearchConfig, "search")
        self.text = text_model or TextExpressionModel.from_pretrained()
        self.image_text = image_text_models or {}
        self._slides = dict(slides or {})
        #: (slide files, FAISS indexes) of the collection, swapped together when ``live`` sees a new commit
        self._source: tuple[SlideStore | None, CollectionIndex | None] = (store, index)
        self.live = live  #: a collection followed while it changes (``serve``): new slides and rebuilds are seen
        self._live_version = -1
        self._inputs: OrderedDict[tuple[str, int], tuple[ad.AnnData, np.ndarray]] = OrderedDict()
        self._inputs_lock = threading.Lock()
        self.vocabulary = load_vocabulary()
        self.scorer = QueryScorer(self.text, self.image_text, self.cfg, self.vocabulary)

    @classmethod
    def from_collection(cls, collection: OpenedCollection, **kwargs) -> SearchEngine:
        """A search engine over an opened collection (:func:`spotwhisper.collection.open_collection`):
        its slide files, its FAISS indexes and the text model its text route was checked against."""
        return cls(store=collection.store, text_model=collection.text_model, index=collection.index, **kwargs)

    @classmethod
    def following(cls, live: LiveCollection, **kwargs) -> SearchEngine:
        """A search engine over the latest committed state of ``live`` (none while it does not exist):
        slides added, removed or rebuilt while it serves are seen at the next :meth:`slide_names` or search."""
        engine = cls(text_model=kwargs.pop("text_model", None) or live.text_model, live=live, **kwargs)
        live.text_model = live.text_model or engine.text
        engine.sync()
        return engine

    @property
    def store(self) -> SlideStore | None:
        """The collection's slide files (None: slides in memory only)."""
        return self._source[0]

    @store.setter
    def store(self, value: SlideStore | None) -> None:
        self._source = (value, self._source[1])

    @property
    def index(self) -> CollectionIndex | None:
        """The collection's CollectionIndex: FAISS narrows large collections (prefilter_*) and lists nearest spots."""
        return self._source[1]

    @index.setter
    def index(self, value: CollectionIndex | None) -> None:
        self._source = (self._source[0], value)

    def sync(self, force: bool = False) -> bool:
        """Take the latest committed state of the followed collection (``live``); True when it changed.
        Called where a request starts (:meth:`slide_names`, :meth:`search`), never in the middle of one."""
        if self.live is None:
            return False
        opened = self.live.current(force)
        if opened is None or self.live.version == self._live_version:
            return False
        self._source, self._live_version = (opened.store, opened.index), self.live.version
        return True

    # -- slides ---------------------------------------------------------------------------
    def slide_names(self) -> list[str]:
        """Slides held in memory, then the collection's: those its manifest lists and that have a
        slide file (a file the manifest does not list yet — an add in progress — is not searched)."""
        self.sync()
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

    def _readable(self, names: list[str], whole: bool) -> tuple[dict[str, ad.AnnData], dict[str, str]]:
        """``(name → AnnData, damaged name → problem)``: a damaged slide file fails only its slide
        (raised when every slide asked for is damaged); with ``whole`` (the whole collection was asked
        for) the slides the manifest lists without a file count as damaged too."""
        data, damaged, first = {}, {}, None
        for n in names:
            try:
                data[n] = self.slide(n)
            except DamagedSlideError as err:
                damaged[n], first = err.problem, first or err
        if whole and self.store is not None and self.index is not None:
            present = set(self.store.slides())
            damaged.update({n: MISSING for n in self.index.manifest.slides() if n not in present and n not in data})
        if not data:
            raise first or ValueError("no readable slides: " + ", ".join(f"{n} ({p})" for n, p in damaged.items()))
        return data, damaged

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
        if self.index is None or not n or len(names) <= n or TRANSCRIPTOME not in self.index.routes():
            return names, None
        q = embed_queries_for_spots(self.text, [parsed.positive], check=False)[0]  # only the text route is indexed for this
        found = self.index.search(TRANSCRIPTOME, q[None], k=min(self.cfg.prefilter_k, len(self.index))).hits
        best = found.groupby("slide")["score"].max().sort_values(ascending=False).index
        keep = [s for s in best if s in set(names)][:n] + list(self._slides)
        keep = list(dict.fromkeys(keep))
        return keep, (f"FAISS (text route) narrowed the search to {len(keep)} of {len(names)} slides, those holding "
                      f"the {self.cfg.prefilter_k} spots nearest the query; the others were not scored.")

    # -- scoring ----------------------------------------------------------------------------
    def _query_vectors(self, text: str) -> dict[str, np.ndarray]:
        return self.scorer.query_vectors(text)

    def route_scores(self, adata: ad.AnnData, parsed: ParsedQuery, weights: dict[str, float]) -> dict[str, np.ndarray]:
        """Raw per-spot scores ``(n,)`` of every route that can answer on ``adata`` (cosines, protein levels)."""
        return self.scorer.score("", adata, parsed, weights)[0]

    def reading(self, parsed: ParsedQuery) -> tuple[str | None, str | None]:
        """``(cannot_read, reads_badly)`` of the query (:func:`spotwhisper.search.legibility.reading`)."""
        return reading(self.text, self.vocabulary, parsed)

    def search(self, query: str, slides: list[str] | None = None, weights: dict[str, float] | None = None,
               threshold: float | None = None, explain: bool = True) -> SearchResult:
        """Score ``slides`` (default: all) for ``query``; regions per slide; slides ranked best first.

        Each slide is scored on its own (absolute relevance), so a slide's answer is the same whether it
        is searched alone or with a collection. A query the text encoder cannot read (another script,
        unknown tokens) is not scored (``result.readable`` False, no map); one it reads badly is scored
        with a note. Both raise an :class:`UnreadableQueryWarning`.
        """
        parsed = parse_query(query, self.cfg.max_query_chars, self.vocabulary)
        self.sync()
        weights = {**self.cfg.weights, **(weights or {})}
        threshold = self.cfg.threshold if threshold is None else threshold
        names, prefilter_note = (slides, None) if slides else self._candidate_slides(parsed)
        if not names:
            raise ValueError("no slides to search: build a collection first (`spotwhisper index build`)")
        data, damaged = self._readable(names, whole=not slides)
        rate = self.cfg.relevance.false_region_rate
        cannot, badly = self.reading(parsed)
        if cannot or badly:
            warnings.warn(cannot or badly, UnreadableQueryWarning, stacklevel=2)
        if cannot:
            hits = [SlideHits(n, a, {}, {}, np.full(a.n_obs, np.nan)) for n, a in data.items()]
            return SearchResult(parsed, hits, [], [], threshold, false_region_rate=rate, readable=False, message=cannot)
        scored = {n: self.scorer.score(n, a, parsed, weights) for n, a in data.items()}
        routes = sorted({r for raw, *_ in scored.values() for r in raw})
        caveats = [c for _, _, c, _ in scored.values() if c]
        if not routes and not caveats:
            raise ValueError(f"no route can answer {query!r}: the slides lack embeddings and proteins")
        notes = ([f"Note: {badly}"] if badly else []) + synonym_notes(self.vocabulary, parsed)
        unlearned = unlearned_note(parsed, list(data.values()), self.cfg.candidates, self.vocabulary, self.text.genes)
        notes += [unlearned] if unlearned else []
        notes += list(dict.fromkeys(n for *_, ns in scored.values() for n in ns))
        if damaged:
            notes.append(f"{len(damaged)} slide(s) not searched: " + ", ".join(f"{n} ({p})" for n, p in damaged.items())
                         + "; rebuild them (`spotwhisper index build --add`) or remove them (`index remove-slide`).")
        if prefilter_note:
            notes.append(prefilter_note)
        if parsed.markers and PROTEIN not in routes and not caveats:
            notes.append("Protein route: the named markers have no transcript proxy or reference here, so it did not answer.")
        hits = [SlideHits(n, data[n], raw, rel, np.full(data[n].n_obs, np.nan), caveat=caveat)
                for n, (raw, rel, caveat, _) in scored.items()]
        base = SearchResult(parsed, hits, routes, notes, threshold, false_region_rate=rate)
        return self.reweight(base, weights, threshold, explain)

    def reweight(self, base: SearchResult, weights: dict[str, float], threshold: float, explain: bool = True) -> SearchResult:
        """(Re-)fuse ``base``'s route relevance with ``weights`` (weighted mean per spot), then regions at
        ``threshold``, explanations and slide ranking. Re-weighting or a new threshold needs no new scoring."""
        if not base.readable:
            return SearchResult(base.query, base.slides, [], list(base.notes), threshold, base.unit,
                                base.false_region_rate, readable=False, message=base.message)
        if base.example is not None:  # an example's routes keep their own weights unless these name them
            weights = {**self.cfg.like.weights, **{r: w for r, w in weights.items() if r in self.cfg.like.weights}}
        used = sorted({r for h in base.slides for r in h.calibrated if weights.get(r, 0) > 0})
        if not used and not any(h.caveat for h in base.slides):
            raise ValueError(f"none of the selected routes answered this query (it was answered by {', '.join(base.routes)})")
        result = []
        for h in base.slides:
            answered = set(h.calibrated) & set(used)
            fused = fuse(h.calibrated, weights) if answered else np.full(h.adata.n_obs, np.nan)
            hits = SlideHits(h.slide, h.adata, h.routes, h.calibrated, fused, caveat=h.caveat)
            hits.regions = [] if h.caveat else self.regions(h.adata, fused, threshold)
            unsure = not h.caveat and wants_candidates(h.adata, base.query, self.cfg.candidates, self.vocabulary,
                                                       self.text.genes)  # a learned concept on an unfamiliar slide
            if unsure and not hits.regions:
                hits.candidates = candidate_regions(fused, self.cfg.candidates,
                                                    lambda level, a=h.adata, f=fused: self.regions(a, f, level))
            if unsure:
                check_areas(hits, base.query, self.scorer, weights, self.cfg.candidates.rival_margin)
            if explain and (hits.regions or hits.candidates):
                self.explain_hits(hits, base.query, base.example)
            result.append(hits)
        result.sort(key=lambda s: -s.best)
        return SearchResult(base.query, result, used, list(base.notes), threshold, base.unit, base.false_region_rate,
                            example=base.example)

    # -- search by example ------------------------------------------------------------------------
    def search_like(self, example: Example, slides: list[str] | None = None, weights: dict[str, float] | None = None,
                    threshold: float | None = None, explain: bool = True) -> SearchResult:
        """Spots like ``example`` (spots of one slide) on ``slides`` (default: all; a collection larger than
        ``prefilter_slides`` is narrowed by FAISS), as regions with explanations — :mod:`.example`.

        Routes and weights: ``configs/search.yaml`` ``like`` (``weights`` overrides them); relevance is
        calibrated on the example's slide, so a slide's answer does not depend on the others searched."""
        self.sync()
        weights = {**self.cfg.like.weights, **(weights or {})}
        threshold = self.cfg.threshold if threshold is None else threshold
        protos = prototypes(self.slide(example.slide), example, EXAMPLE_ROUTES, weights, self.cfg)
        if not protos:
            raise ValueError(f"{example.slide} holds none of the vectors search by example compares "
                             f"({', '.join(EXAMPLE_ROUTES.values())}); process it with the current pipeline")
        query = ExampleQuery(example, protos)
        names, note = (slides, None) if slides else self._like_candidates(query)
        data = {n: self.slide(n) for n in names}
        scored = {n: like_scores(a, protos, self.cfg) for n, a in data.items()}
        routes = sorted({r for raw, _, _ in scored.values() for r in raw})
        notes = [f"Search by example: {len(example.spots)} spot(s) of {example.label}; a spot matches when it is at "
                 "least as alike to them as they are to each other (relevance calibrated on the example's slide)."]
        notes += list(dict.fromkeys(n for *_, ns in scored.values() for n in ns)) + ([note] if note else [])
        text = f"like {example.label}"
        hits = [SlideHits(n, data[n], raw, rel, np.full(data[n].n_obs, np.nan)) for n, (raw, rel, _) in scored.items()]
        base = SearchResult(ParsedQuery(text, text), hits, routes, notes, threshold, LIKE_UNIT, None, example=query)
        return self.reweight(base, weights, threshold, explain)

    def _index_route(self, key: str) -> str | None:
        """The collection's FAISS route holding obsm ``key`` (``configs/index.yaml`` routes), or None."""
        if self.index is None:
            return None
        from ..index import load_index_config

        return next((r for r, k in load_index_config().routes.items() if k == key and r in self.index.routes()), None)

    def nearest_spots(self, query: ExampleQuery, k: int | None = None) -> tuple[str | None, pd.DataFrame | None]:
        """``(route, table)``: the ``k`` spots of the collection nearest the example by FAISS (slide, spot, x,
        y, cosine), in the first indexed example route (the image vector first), best first; ``(None, None)``
        without an index. Image-vector hits on slides of another image encoder are left out."""
        for route, proto in query.prototypes.items():
            name = self._index_route(proto.key)
            if name is None:
                continue
            k = min(k or self.cfg.like.nearest, len(self.index))
            found = self.index.search(name, proto.vector[None], k=k).hits
            if proto.space is not None:
                from ..pipeline import image_space

                same = {s for s in found["slide"].unique() if image_space(self.slide(s)) == proto.space}
                found = found[found["slide"].isin(same)]
            return name, found[["rank", "score", "slide", "spot", "x", "y"]].reset_index(drop=True)
        return None, None

    def _like_candidates(self, query: ExampleQuery) -> tuple[list[str], str | None]:
        """Every slide, or — in a collection of more than ``cfg.prefilter_slides`` slides — the slides holding
        the ``cfg.prefilter_k`` spots FAISS finds nearest the example (its slide and in-memory slides kept)."""
        names, n = self.slide_names(), self.cfg.prefilter_slides
        if self.index is None or not n or len(names) <= n:
            return names, None
        route, found = self.nearest_spots(query, self.cfg.prefilter_k)
        if found is None:
            return names, None
        best = found.groupby("slide")["score"].max().sort_values(ascending=False).index
        keep = list(dict.fromkeys([query.example.slide, *[s for s in best if s in set(names)][:n], *self._slides]))
        return keep, (f"FAISS (route {route}) narrowed the search to {len(keep)} of {len(names)} slides, those holding "
                      f"the {self.cfg.prefilter_k} spots nearest the example; the others were not scored.")

    def regions(self, adata: ad.AnnData, fused: np.ndarray, threshold: float) -> list[Region]:
        """Connected regions of spots with ``fused >= threshold`` on one slide."""
        lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
        sf = adata.uns[keys.SPATIAL][lib]["scalefactors"] if lib else {}
        coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
        spacing = spot_spacing(adata)
        mpp = float(sf.get(keys.MPP, 1.0))
        return find_regions(coords, fused, threshold, spacing, spacing, mpp, self.cfg.link, self.cfg.min_region_spots)

    def explain_hits(self, hits: SlideHits, parsed: ParsedQuery, example: ExampleQuery | None = None) -> None:
        """Explain the strongest region (else the candidate areas) of ``hits`` (spots vs rest; gene attributions
        towards the query, or towards an example's transcriptome prototype), in place."""
        # a slide without regions: its candidate areas together (each is small; together they are what is shown)
        spots = hits.regions[0].spots if hits.regions else np.concatenate([r.spots for r in hits.candidates])
        hits.explanation = self._contrast(hits.adata, spots)
        q = example.vector("transcriptome") if example is not None else None
        if keys.TEXT_EMB in hits.adata.obsm and (example is None or q is not None):
            if q is None:
                q = embed_queries_for_spots(self.text, [parsed.positive], check=False)[0]
            hits.attributions = gene_attributions(self.text, hits.adata, spots, q, self.cfg.top_genes,
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
        x = expression_matrix(a)
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
