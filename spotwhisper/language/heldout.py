"""Held-out concepts: train a text model that never read a caption naming a concept.

A :class:`Concept` lists case-insensitive regular expressions that name a class or one of its
synonyms (``configs/bench/concepts.yaml``, e.g. ``immune: [immun, infiltrat, inflammat, lymphocyt,
leukocyt]``). :func:`drop_concept` removes every caption that matches any of them — label, cluster,
deconvolution, marker and TLS captions alike — so a model trained on what is left has never read
the concept, and scoring the concept with it is zero-shot recognition rather than transfer of a
seen concept to a new patient. Paraphrases are other wordings of the class that no caption
contains (checked by :func:`captions_containing`), for prompt-robustness tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .captions import Caption


@dataclass
class Concept:
    """A concept to hold out: ``patterns`` (regular expressions, case-insensitive) naming it or its
    synonyms, and ``paraphrases`` (other wordings, for robustness tests)."""

    name: str
    patterns: list[str]
    paraphrases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError(f"concept {self.name!r}: no patterns (a held-out concept must name what it removes)")
        try:
            self._regex = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"concept {self.name!r}: bad pattern in {self.patterns}: {err}") from err

    def named_in(self, text: str) -> bool:
        """True when ``text`` names the concept (one of its patterns matches)."""
        return self._regex.search(text) is not None


def drop_concept(captions: list[list[Caption]], concept: Concept | None) -> tuple[list[list[Caption]], int]:
    """``captions`` without every caption naming ``concept`` (per spot) and the number removed."""
    if concept is None:
        return captions, 0
    out = [[c for c in caps if not concept.named_in(c.text)] for caps in captions]
    return out, sum(len(a) - len(b) for a, b in zip(captions, out))


def captions_naming(texts: Iterable[str], concept: Concept) -> list[str]:
    """The texts among ``texts`` that name ``concept`` (empty for a model that never read it)."""
    return [t for t in texts if concept.named_in(t)]


def captions_containing(texts: Iterable[str], phrases: Sequence[str]) -> dict[str, str]:
    """Phrase → first text containing it as whole words (case-insensitive: "fat" is in "fat cells", not
    in "fatty acid"), for the ``phrases`` some text contains."""
    texts = list(texts)
    found = {}
    for p in phrases:
        rx = re.compile(rf"(?<!\w){re.escape(p)}(?!\w)", re.IGNORECASE)
        hit = next((t for t in texts if rx.search(t)), None)
        if hit is not None:
            found[p] = hit
    return found
