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

from ..genes import expression_matrix
from ..routes import PROTEIN, TRANSCRIPTOME
from .. import keys
from ..collection import OpenedCollection, SlideStore, open_collection
from ..index import CollectionIndex
from ..io.spatial import spot_spacing
from ..language import TextExpressionModel, UnreadableQueryWarning
from ..language.expression_encoder import expression_input
from ..language.transcriptome_zeroshot import embed_queries_for_spots, illegible_words, readable_fraction
from ..prompts import load_vocabulary
from .attribution import gene_attributions
from .config import SearchConfig
from .explain import Explanation, explain_spots
from .fusion import fuse
from .query import ParsedQuery, parse_query
from .regions import Region, find_regions
from .result import SearchResult, SlideHits
from .scoring import CLIP_ROUTES, EMBEDDING_ROUTES, QueryScorer

__all__ = ["CLIP_ROUTES", "EMBEDDING_ROUTES", "SearchEngine", "SearchResult", "SlideHits", "open_engine"]

log = logging.getLogger(__name__)


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
        self.scorer = QueryScorer(self.text, self.image_text, self.cfg, self.vocabulary)

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
        """``(cannot_read, reads_badly)``: why the text encoder cannot read the query at all (most words
        in another script or of unknown tokens: nothing is scored), or why it reads it badly (few
        readable words: scored, and said so); None when it reads well."""
        limit = 1.0 - self.text.config.text.unk_warn_fraction
        name = self.text.config.text.name
        for part in (parsed.positive, parsed.negative):
            if not part:
                continue
            bad = illegible_words(self.text, part)
            if len(bad) >= max(1, len(part.split()) / 2):
                return (f"the text encoder {name!r} cannot read {', '.join(repr(w) for w in bad)} in {part!r} "
                        "(another script or unknown tokens; the default encoder reads English).", None)
            if (frac := readable_fraction(self.text, part, self.vocabulary)) < limit:
                return None, (f"query {part!r}: the text encoder {name!r} reads only {frac:.0%} of its words "
                              "(unusual words); it was scored, but a match is unlikely to mean much.")
        return None, None

    def search(self, query: str, slides: list[str] | None = None, weights: dict[str, float] | None = None,
               threshold: float | None = None, explain: bool = True) -> SearchResult:
        """Score ``slides`` (default: all) for ``query``; regions per slide; slides ranked best first.

        Each slide is scored on its own (absolute relevance), so a slide's answer is the same whether it
        is searched alone or with a collection. A query the text encoder cannot read (another script,
        unknown tokens) is not scored (``result.readable`` False, no map); one it reads badly is scored
        with a note. Both raise an :class:`UnreadableQueryWarning`.
        """
        parsed = parse_query(query, self.cfg.max_query_chars, self.vocabulary)
        weights = {**self.cfg.weights, **(weights or {})}
        threshold = self.cfg.threshold if threshold is None else threshold
        names, prefilter_note = (slides, None) if slides else self._candidate_slides(parsed)
        if not names:
            raise ValueError("no slides to search: build a collection first (`spotwhisper index build`)")
        data = {n: self.slide(n) for n in names}
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
        notes = ([f"Note: {badly}"] if badly else []) + list(dict.fromkeys(n for *_, ns in scored.values() for n in ns))
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
        used = sorted({r for h in base.slides for r in h.calibrated if weights.get(r, 0) > 0})
        if not used and not any(h.caveat for h in base.slides):
            raise ValueError(f"none of the selected routes answered this query (it was answered by {', '.join(base.routes)})")
        result = []
        for h in base.slides:
            answered = set(h.calibrated) & set(used)
            fused = fuse(h.calibrated, weights) if answered else np.full(h.adata.n_obs, np.nan)
            hits = SlideHits(h.slide, h.adata, h.routes, h.calibrated, fused, caveat=h.caveat)
            hits.regions = [] if h.caveat else self.regions(h.adata, fused, threshold)
            if explain and hits.regions:
                self.explain_hits(hits, base.query)
            result.append(hits)
        result.sort(key=lambda s: -s.best)
        return SearchResult(base.query, result, used, list(base.notes), threshold, base.unit, base.false_region_rate)

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
