"""Shared tissue vocabulary and prompt ensembling for every text route.

The vocabulary (``configs/vocabulary.yaml``) names tissue terms with synonyms, marker genes and
marker proteins. :func:`ensemble_text_embeddings` embeds every template × synonym of a class
and averages the normalised embeddings (the CONCH / CLIP prompt-ensembling recipe), for any
``encode`` function mapping texts to vectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .config import resolve_config_path


@dataclass
class Term:
    """One vocabulary entry."""

    name: str
    category: str = "other"
    synonyms: list[str] = field(default_factory=list)
    genes: list[str] = field(default_factory=list)
    proteins: list[str] = field(default_factory=list)
    #: terms that are kinds of this one ("T cells" are "immune cells"): a spot one of them describes is
    #: described by this term too, so search counts them with it (they do not compete with it)
    narrower: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The name followed by its synonyms."""
        return [self.name, *self.synonyms]


@dataclass
class Vocabulary:
    """Terms by name and prompt templates by route (``"transcriptome"``, ``"image"``)."""

    terms: dict[str, Term]
    templates: dict[str, list[str]]

    def lookup(self, text: str) -> Term | None:
        """The term whose name — else one of whose synonyms — equals ``text`` (case- and
        punctuation-insensitive): a term's own name wins over another term's synonym."""
        key = normalize_text(text)
        for term in self.terms.values():
            if normalize_text(term.name) == key:
                return term
        for term in self.terms.values():
            if any(normalize_text(n) == key for n in term.names):
                return term
        return None

    def counted_with(self, text: str) -> list[str]:
        """Names of the terms a query ``text`` stands for: every term it names exactly — by its own name or a
        synonym (case- and punctuation-insensitive; "immune cells" names the term "immune cells" and, as a
        synonym, "immune infiltrate") — and the terms that are kinds of those (``narrower``: "T cells",
        "B cells" …). Search counts their reference descriptions with the query, not against it."""
        key = normalize_text(text)
        named = [t for t in self.terms.values() if any(normalize_text(n) == key for n in t.names)]
        return list(dict.fromkeys([t.name for t in named] + [n for t in named for n in t.narrower]))

    def related(self, names: Sequence[str], genes: Sequence[str] = (), proteins: Sequence[str] = ()) -> set[str]:
        """Names of the terms ``names``, their ``narrower`` terms, and every term sharing a marker gene or protein
        with them or with ``genes`` / ``proteins`` (a region and the cell types it holds: "immune infiltrate"
        and "B cells")."""
        own = [self.terms[n] for n in names if n in self.terms]
        g = {x for t in own for x in t.genes} | set(genes)
        p = {x for t in own for x in t.proteins} | set(proteins)
        kinds = {n for t in own for n in t.narrower}
        return set(names) | kinds | {t.name for t in self.terms.values() if g & set(t.genes) or p & set(t.proteins)}

    def find_in(self, text: str) -> list[Term]:
        """Terms whose name or a synonym occurs as whole words inside ``text``, longest match first."""
        norm = f" {normalize_text(text)} "
        hits: list[tuple[int, Term]] = []
        for term in self.terms.values():
            best = max((len(n) for n in map(normalize_text, term.names) if f" {n} " in norm), default=0)
            if best:
                hits.append((best, term))
        return [t for _, t in sorted(hits, key=lambda h: -h[0])]

    def templates_for(self, route: str) -> list[str]:
        if route not in self.templates:
            raise KeyError(f"no prompt templates for route {route!r} (have {sorted(self.templates)})")
        return self.templates[route]


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces ("PD-L1 high!" → "pd l1 high")."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """Read the vocabulary YAML: a file or config name (default ``vocabulary``, i.e. ``configs/vocabulary.yaml``
    or the one in ``--config-dir``)."""
    p = resolve_config_path(path if path is not None else "vocabulary")
    with open(p) as fh:
        raw = yaml.safe_load(fh)
    terms = {name: Term(name=name, **(spec or {})) for name, spec in raw.get("terms", {}).items()}
    for term in terms.values():
        unknown = [n for n in term.narrower if n not in terms or n == term.name]
        if unknown:
            raise ValueError(f"{p}: '{term.name}' lists narrower terms that are not other terms of the vocabulary: {unknown}")
    return Vocabulary(terms=terms, templates={k: list(v) for k, v in raw.get("templates", {}).items()})


def expand_prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every name: ``len(names) * len(templates)`` prompts."""
    if not names:
        raise ValueError("no class names to build prompts from")
    return [t.format(n) for n in names for t in (templates or ["{}"])]


def ensemble_text_embeddings(
    encode: Callable[[list[str]], np.ndarray],
    classes: Sequence[Sequence[str]],
    templates: Sequence[str],
) -> np.ndarray:
    """Prompt-ensembled class embeddings ``(C, D)``, L2-normalised.

    ``classes[c]`` lists the names (term and synonyms) of class ``c``; every name is put into
    every template, embedded with ``encode`` (texts → ``(N, D)``), normalised and averaged.
    """
    prompts = [expand_prompts(list(names), templates) for names in classes]
    flat = [p for ps in prompts for p in ps]
    emb = np.asarray(encode(flat), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    out, start = [], 0
    for ps in prompts:
        mean = emb[start : start + len(ps)].mean(axis=0)
        out.append(mean / max(np.linalg.norm(mean), 1e-12))
        start += len(ps)
    return np.stack(out)
