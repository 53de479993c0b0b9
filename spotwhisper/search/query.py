"""Read a free-text query: contrast ("A minus B"), protein markers named in it, vocabulary terms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..prompts import Term, Vocabulary, load_vocabulary
from ..proteins.panel import find_marker, find_markers_in

#: words that split a contrast query into "A" and "B" (case-insensitive, whole words)
CONTRAST_SPLIT = re.compile(r"\s+(?:minus|but not|and not|excluding|except|without)\s+", re.IGNORECASE)
LOW_AFTER = {"low", "negative", "neg", "lo", "absent", "loss", "depleted"}
LOW_BEFORE = {"no", "low", "absent", "without", "lacking"}


class QueryError(ValueError):
    """The query cannot be searched (empty, too long)."""


@dataclass
class MarkerMention:
    """A protein marker named in the query; ``sign`` is +1 ("PD-L1 high") or -1 ("PD-L1 low")."""

    marker: str
    sign: int = 1


@dataclass
class ParsedQuery:
    """``positive`` text (what to find), optional ``negative`` text (what to subtract), markers and
    vocabulary terms found in the positive part."""

    text: str
    positive: str
    negative: str | None = None
    markers: list[MarkerMention] = field(default_factory=list)
    negative_markers: list[MarkerMention] = field(default_factory=list)
    terms: list[Term] = field(default_factory=list)

    @property
    def is_contrast(self) -> bool:
        return self.negative is not None


def _markers(text: str, max_words: int = 6) -> list[MarkerMention]:
    """Markers named in ``text``; a "low"/"negative" word right after a mention (or "no"/"low"
    right before it) gives ``sign = -1``."""
    words = re.findall(r"[0-9a-z]+", text.lower())
    out = []
    for marker in find_markers_in(text):
        sign = 1
        for n in range(max_words, 0, -1):
            for i in range(len(words) - n + 1):
                if find_marker("".join(words[i : i + n])) == marker:
                    after = words[i + n] if i + n < len(words) else ""
                    before = words[i - 1] if i > 0 else ""
                    if after in LOW_AFTER or before in LOW_BEFORE:
                        sign = -1
        out.append(MarkerMention(marker, sign))
    return out


def parse_query(text: str, max_chars: int = 300, vocabulary: Vocabulary | None = None) -> ParsedQuery:
    """Split and annotate a query; raises :class:`QueryError` for empty or over-long text."""
    if text is None or not text.strip():
        raise QueryError("empty query: type what to look for, e.g. 'tertiary lymphoid structures'")
    text = " ".join(text.split())
    if len(text) > max_chars:
        raise QueryError(f"query too long ({len(text)} characters; at most {max_chars}): keep it to a phrase")
    parts = CONTRAST_SPLIT.split(text, maxsplit=1)
    positive = parts[0].strip()
    negative = parts[1].strip() if len(parts) == 2 and parts[1].strip() else None
    if not positive:
        raise QueryError(f"nothing to search for before the contrast word in {text!r}")
    vocabulary = vocabulary or load_vocabulary()
    return ParsedQuery(
        text=text,
        positive=positive,
        negative=negative,
        markers=_markers(positive),
        negative_markers=_markers(negative) if negative else [],
        terms=vocabulary.find_in(positive),
    )
