"""How the text encoder reads a query: whether it can read it at all, and which words it reads as a
vocabulary term (a synonym is answered as its term, so synonyms give the same map — and the answer says so)."""

from __future__ import annotations

from ..language import TextExpressionModel
from ..language.transcriptome_zeroshot import illegible_words, readable_fraction
from ..prompts import Vocabulary, normalize_text
from .query import ParsedQuery


def reading(text: TextExpressionModel, vocabulary: Vocabulary, parsed: ParsedQuery) -> tuple[str | None, str | None]:
    """``(cannot_read, reads_badly)``: why the text encoder cannot read the query at all (most words
    in another script or of unknown tokens: nothing is scored), or why it reads it badly (few
    readable words: scored, and said so); None when it reads well."""
    limit = 1.0 - text.config.text.unk_warn_fraction
    name = text.config.text.name
    for part in (parsed.positive, parsed.negative):
        if not part:
            continue
        bad = illegible_words(text, part)
        if len(bad) >= max(1, len(part.split()) / 2):
            return (f"the text encoder {name!r} cannot read {', '.join(repr(w) for w in bad)} in {part!r} "
                    "(another script or unknown tokens; the default encoder reads English).", None)
        if (frac := readable_fraction(text, part, vocabulary)) < limit:
            return None, (f"query {part!r}: the text encoder {name!r} reads only {frac:.0%} of its words "
                          "(unusual words); it was scored, but a match is unlikely to mean much.")
    return None, None


def synonym_notes(vocabulary: Vocabulary, parsed: ParsedQuery) -> list[str]:
    """A note for each part of the query that is a synonym of a vocabulary term: it is answered as that
    term (its name and synonyms ensembled), so synonyms give the same map."""
    out = []
    for part in (parsed.positive, parsed.negative):
        term = vocabulary.lookup(part) if part else None
        if term is not None and normalize_text(term.name) != normalize_text(part):
            out.append(f"'{part}' is read as the vocabulary term '{term.name}' (with its synonyms "
                       f"{', '.join(repr(n) for n in term.names[1:4])}…): they give the same map.")
    return out
