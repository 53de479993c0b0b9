"""Per-slide scoring of a parsed query: every route's raw score and its absolute relevance
(:mod:`spotwhisper.search.relevance`), plus the caveats that replace a map — a named protein
marker that protein QC flags as not informative, or a named gene without signal on the slide."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from ..genes import expression_matrix
from .. import keys
from ..language import TextExpressionModel
from ..language.transcriptome_zeroshot import embed_queries_for_spots
from ..prompts import Vocabulary
from ..proteins import find_marker, marker_qc
from ..routes import CONCH, IMAGE, MEASURED, PLIP, PROTEIN, TRANSCRIPTOME
from .config import SearchConfig
from .protein_reference import ProteinReference, load_protein_reference
from .query import MarkerMention, ParsedQuery
from .relevance import ReferencePrompts, level_relevance, text_relevance

#: route → obsm key of its spot embeddings (the transcriptome–text space)
EMBEDDING_ROUTES = {
    TRANSCRIPTOME: keys.TEXT_EMB,
    IMAGE: keys.IMAGE_TEXT_EMB_ALIGNED,
    MEASURED: keys.TEXT_EMB_MEASURED,
}
#: routes of search by example (``search --like``): route → obsm key of the spot vectors an example is
#: compared in (its own spaces; ``image_vec`` is the pooled image vector, ``keys.IMAGE_VEC``)
EXAMPLE_ROUTES = {"image_vec": keys.IMAGE_VEC, "transcriptome": keys.TEXT_EMB, "image": f"{keys.IMAGE_TEXT_EMB_PREFIX}aligned"}
#: image–text models in their own spaces
CLIP_ROUTES = {route: f"{keys.IMAGE_TEXT_EMB_PREFIX}{route}" for route in (PLIP, CONCH)}
_GENE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")


class QueryScorer:
    """Scores queries on slides for one engine (text model, image–text models, settings); caches the
    reference descriptions' embeddings and their cosines to each slide's spots (thread-safe)."""

    def __init__(self, text: TextExpressionModel, image_text: Mapping, cfg: SearchConfig, vocabulary: Vocabulary,
                 protein_reference: ProteinReference | None = None) -> None:
        self.text, self.image_text, self.cfg, self.vocabulary = text, dict(image_text), cfg, vocabulary
        rel = cfg.relevance
        names = ([n for t in vocabulary.terms.values() for n in [t.name]] if rel.use_vocabulary else []) + list(rel.background)
        self.references = ReferencePrompts(names, cache_size=4 * max(1, cfg.max_slide_cache))
        self.protein_reference = protein_reference if protein_reference is not None else load_protein_reference()
        self._qc: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
        self._lock = threading.Lock()

    # -- text spaces ------------------------------------------------------------------------------
    def embed(self, space: str, texts: list[str]) -> np.ndarray:
        """Prompt-ensembled embeddings ``(k, D)`` of ``texts`` in text space ``space`` ("text" or an image–text model)."""
        if space == "text":
            return embed_queries_for_spots(self.text, texts, vocabulary=self.vocabulary, check=False)
        from ..imagetext.tile_zeroshot import embed_queries_for_tiles

        return embed_queries_for_tiles(self.image_text[space], texts)

    def scale(self, space: str) -> float:
        """Inverse temperature of the space's model (its learned logit scale)."""
        if space == "text":
            return float(self.text.logit_scale)
        return float(getattr(self.image_text[space], "logit_scale", 100.0))

    def model_id(self, space: str) -> str:
        """Fingerprint of the model behind a text space (the reference embeddings are shared by it)."""
        if space == "text":
            if getattr(self, "_text_id", None) is None:
                self._text_id = f"text/{self.text.fingerprint()}/{self.text.config.text.name}"
            return self._text_id
        model = self.image_text[space]
        return f"{space}/{getattr(model, 'weights', id(model))}"

    def query_vectors(self, text: str) -> dict[str, np.ndarray]:
        """The query in every text space the engine has."""
        return {space: self.embed(space, [text])[0] for space in ["text", *self.image_text]}

    def spaces(self, adata: ad.AnnData, weights: Mapping[str, float]) -> dict[str, tuple[str, str]]:
        """route → (obsm key, text space) of the embedding routes that can answer on ``adata``."""
        out = {}
        for route, key in {**EMBEDDING_ROUTES, **CLIP_ROUTES}.items():
            space = "text" if route in EMBEDDING_ROUTES else route
            if weights.get(route, 0) > 0 and key in adata.obsm and (space == "text" or space in self.image_text):
                out[route] = (key, space)
        return out

    # -- one slide ----------------------------------------------------------------------------------
    def score(self, slide: str, adata: ad.AnnData, parsed: ParsedQuery, weights: Mapping[str, float]
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str | None, list[str]]:
        """``(raw, relevance, caveat, notes)`` of ``parsed`` on one slide: raw per-route scores ``(n,)``
        (cosine, or A − B cosines for a contrast; protein levels), their relevance (log-odds), a caveat
        when the slide is answered with a sentence instead of a map, and notes for the answer."""
        raw: dict[str, np.ndarray] = {}
        rel: dict[str, np.ndarray] = {}
        spaces = self.spaces(adata, weights)
        pos = self.query_vectors(parsed.positive) if spaces else {}
        neg = self.query_vectors(parsed.negative) if spaces and parsed.negative else None
        for route, (key, space) in spaces.items():
            emb = np.asarray(adata.obsm[key], dtype=np.float32)
            refs = self.references.embeddings(space, lambda names, s=space: self.embed(s, names), self.model_id(space))
            sims = self.references.spot_sims((slide, id(adata), route), emb, refs)
            sq = emb @ pos[space]
            tau = self.cfg.relevance.synonym_similarity
            syn = self.references.synonyms(refs, pos[space], tau,
                                           exclude=[parsed.positive, *self.vocabulary.counted_with(parsed.positive)])
            other = None
            if neg is not None:
                syn_b = self.references.synonyms(refs, neg[space], tau,
                                                 exclude=[parsed.negative, *self.vocabulary.counted_with(parsed.negative)])
                syn = syn & ~syn_b
                sn = emb @ neg[space]
                other = sn[:, None]
                raw[route] = (sq - sn).astype(np.float64)
            else:
                raw[route] = sq.astype(np.float64)
            rel[route] = text_relevance(sq, sims, syn, self.scale(space), negative=other)
        notes: list[str] = []
        caveat = None
        if weights.get(PROTEIN, 0) > 0:
            caveat, got = self._proteins(slide, adata, parsed, notes)
            if got is not None:
                raw[PROTEIN], rel[PROTEIN] = got
        gene_caveat = self._genes(slide, adata, parsed)
        return raw, rel, caveat or gene_caveat, notes

    # -- every learned concept at once (the rival test of low-confidence candidates) -------------------
    def term_relevance(self, slide: str, adata: ad.AnnData, weights: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
        """Every vocabulary term's relevance on ``adata`` as if it were the query: ``(names, (n, T))``, the
        embedding routes of ``weights`` fused by weight (what :meth:`score` gives a query naming the term,
        without the protein route). Read from the cached reference cosines; empty when the vocabulary is not
        among the references (``relevance.use_vocabulary`` off)."""
        names = [t.name for t in self.vocabulary.terms.values() if t.name in self.references.names]
        spaces = self.spaces(adata, weights)
        if not names or not spaces:
            return [], np.zeros((adata.n_obs, 0))
        idx = [self.references.names.index(n) for n in names]
        total, wsum = np.zeros((adata.n_obs, len(idx))), 0.0
        tau = self.cfg.relevance.synonym_similarity
        for route, (key, space) in spaces.items():
            refs = self.references.embeddings(space, lambda ns, s=space: self.embed(s, ns), self.model_id(space))
            sims = self.references.spot_sims((slide, id(adata), route), np.asarray(adata.obsm[key], dtype=np.float32), refs)
            for k, j in enumerate(idx):
                name = self.references.names[j]
                syn = self.references.synonyms(refs, refs[j], tau, exclude=[name, *self.vocabulary.counted_with(name)])
                total[:, k] += weights[route] * text_relevance(sims[:, j], sims, syn, self.scale(space))
            wsum += weights[route]
        return names, total / wsum

    def related_terms(self, parsed: ParsedQuery, genes: pd.Index) -> set[str]:
        """Vocabulary terms that are the query's own concept or part of it: terms named in it (a name or synonym)
        or embedded within ``relevance.synonym_similarity`` of it in the transcriptome–text space, and every term
        sharing a marker gene or protein with those or with the genes (of ``genes``) and markers it names."""
        own = {t.name for t in self.vocabulary.find_in(parsed.positive)}
        names = [t.name for t in self.vocabulary.terms.values() if t.name in self.references.names]
        if names:
            refs = self.references.embeddings("text", lambda ns: self.embed("text", ns), self.model_id("text"))
            close = refs @ self.embed("text", [parsed.positive])[0] >= self.cfg.relevance.synonym_similarity
            own |= {n for n in names if close[self.references.names.index(n)]}
        return self.vocabulary.related(sorted(own), named_genes(parsed.positive, genes), [m.marker for m in parsed.markers])

    # -- proteins -----------------------------------------------------------------------------------
    def _qc_table(self, slide: str, adata: ad.AnnData) -> pd.DataFrame:
        key = (slide, id(adata))
        with self._lock:
            if key in self._qc:
                return self._qc[key]
        values = np.asarray(adata.obsm.get(keys.PROTEINS_RAW, adata.obsm[keys.PROTEINS]), dtype=np.float64)
        table = marker_qc(values, [str(m) for m in adata.uns[keys.PROTEIN_MARKERS]])
        with self._lock:
            self._qc[key] = table
            while len(self._qc) > 4 * max(1, self.cfg.max_slide_cache):
                self._qc.popitem(last=False)
        return table

    def _picks(self, adata: ad.AnnData, mentions: list[MarkerMention], terms) -> tuple[list[tuple[str, int]], bool]:
        """Markers to read and their signs; True when the query named them (else: its terms' markers)."""
        markers = [str(m) for m in adata.uns.get(keys.PROTEIN_MARKERS, [])]
        named = [(m.marker, m.sign) for m in mentions if m.marker in markers]
        if named:
            return named, True
        found = (find_marker(p) for t in terms for p in t.proteins)
        return [(n, 1) for n in dict.fromkeys(found) if n in markers], False

    def _proteins(self, slide: str, adata: ad.AnnData, parsed: ParsedQuery, notes: list[str]
                  ) -> tuple[str | None, tuple[np.ndarray, np.ndarray] | None]:
        """(caveat, (raw levels, relevance)) of the protein route; the caveat when every marker the
        query names is flagged by protein QC on this slide."""
        if keys.PROTEINS not in adata.obsm or keys.PROTEIN_MARKERS not in adata.uns:
            return None, None
        pos = self._protein_side(slide, adata, parsed.markers, parsed.terms, notes)
        if isinstance(pos, str):
            return pos, None
        if pos is None:
            return None, None
        raw, rel = pos
        if parsed.negative:
            neg = self._protein_side(slide, adata, parsed.negative_markers, self.vocabulary.find_in(parsed.negative), notes)
            if isinstance(neg, tuple):
                raw = raw - neg[0]
                rel = rel - np.clip(neg[1] - self.cfg.relevance.threshold, 0, None)  # spots where B is a hit lose
        return None, (raw, rel)

    def _protein_side(self, slide, adata, mentions, terms, notes):
        picks, named = self._picks(adata, mentions, terms)
        if not picks:
            return None
        qc = self._qc_table(slide, adata).set_index("marker")
        markers = [str(m) for m in adata.uns[keys.PROTEIN_MARKERS]]
        raw_all = np.asarray(adata.obsm.get(keys.PROTEINS_RAW, adata.obsm[keys.PROTEINS]), dtype=np.float64)
        flagged = [(m, qc.at[m, "reason"]) for m, _ in picks if not bool(qc.at[m, "informative"])]
        usable = [(m, s) for m, s in picks if m not in dict(flagged)]
        if named and flagged:
            said = "; ".join(f"{m} is not informative on {slide} ({why})" for m, why in flagged)
            if not usable:
                return f"no map for {', '.join(m for m, _ in flagged)} on {slide}: {said} — protein QC"
            notes.append(f"Protein route: {said}; answered from {', '.join(m for m, _ in usable)} only.")
        parts_raw, parts_rel = [], []
        for m, sign in usable:
            q = self.protein_reference.of(m) if self.protein_reference is not None else None
            if q is None:
                notes.append(f"Protein route: no reference distribution for {m}, so it cannot say what is high.")
                continue
            x = raw_all[:, markers.index(m)]
            parts_raw.append(sign * x)
            n_ref = self.protein_reference.n_spots
            parts_rel.append(level_relevance(x, q, self.cfg.relevance, n_ref) if sign > 0
                             else level_relevance(-x, -q[::-1], self.cfg.relevance, n_ref))
        if not parts_rel:
            return None
        notes[:] = list(dict.fromkeys(notes))
        return np.nanmean(np.stack(parts_raw), axis=0), np.nanmean(np.stack(parts_rel), axis=0)

    # -- genes --------------------------------------------------------------------------------------
    def _genes(self, slide: str, adata: ad.AnnData, parsed: ParsedQuery) -> str | None:
        """A caveat when every gene symbol the query names is flat on the slide (no signal)."""
        genes = named_genes(parsed.positive, adata.var_names)
        if not genes:
            return None
        x = expression_matrix(adata)
        flat = []
        for g in genes:
            col = x[:, adata.var_names.get_loc(g)]
            v = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=np.float64).ravel()
            lo, hi = np.percentile(v, [1, 99])
            if hi - lo < self.cfg.relevance.min_gene_range:
                flat.append(f"{g} (level spans {hi - lo:.3f} log1p units over {adata.n_obs} spots)")
        if len(flat) < len(genes):
            return None
        return f"no map for {', '.join(genes)} on {slide}: no signal there — {'; '.join(flat)}"


def named_genes(text: str, var_names: pd.Index) -> list[str]:
    """Gene symbols of ``var_names`` named in ``text`` (as written: upper case or with digits, e.g. CD274, ERBB2)."""
    names = set(map(str, var_names))
    out = []
    for tok in _GENE_TOKEN.findall(text):
        if (tok.isupper() or any(c.isdigit() for c in tok)) and len(tok) >= 2 and tok in names:
            out.append(tok)
    return list(dict.fromkeys(out))
