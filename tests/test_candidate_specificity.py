"""Low-confidence candidates tested against the slide's other learned concepts: areas that stand out more for
another concept are not shown, concepts that stand out as much are named, and a region's parts (its cell
types) are not its rivals."""

from __future__ import annotations

import numpy as np
import pytest

from spotwhisper.prompts import load_vocabulary
from spotwhisper.search.candidates import Specificity, specificity, standout


def _maps(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    inside = np.zeros(n, dtype=bool)
    inside[:40] = True
    noise = lambda: rng.normal(size=n)  # noqa: E731
    return rng, inside, noise


def test_standout_is_the_standardised_mean_difference():
    v = np.r_[np.full(10, 3.0), np.zeros(90)]
    inside = np.r_[np.ones(10, bool), np.zeros(90, bool)]
    assert standout(v, inside) == pytest.approx(3.0 / v.std())
    assert np.isnan(standout(np.zeros(100), inside))  # a flat map stands out for nothing
    v[0] = np.nan  # NaN spots are ignored
    assert np.isfinite(standout(v, inside))


def test_candidates_that_stand_out_more_for_another_concept_are_dropped():
    _, inside, noise = _maps()
    query = noise() + 0.5 * inside
    other = noise() + 3.0 * inside  # the areas are far more "other" than "query"
    spec = specificity(query, ["other", "flat"], np.c_[other, noise()], inside, exclude=set(), margin=0.5)
    assert not spec.kept and spec.best_rival[0] == "other"
    assert "stand out more for 'other'" in spec.sentence("query") and "none is shown" in spec.sentence("query")


def test_concepts_that_stand_out_as_much_are_named_and_the_candidates_kept():
    _, inside, noise = _maps()
    query = noise() + 2.0 * inside
    twin = noise() + 1.9 * inside
    spec = specificity(query, ["twin", "flat"], np.c_[twin, noise()], inside, exclude=set(), margin=0.5)
    assert spec.kept and [n for n, _ in spec.rivals] == ["twin"]
    assert "cannot tell these apart" in spec.sentence("query") and "'twin'" in spec.sentence("query")
    alone = specificity(query, ["flat"], noise()[:, None], inside, exclude=set(), margin=0.5)
    assert alone.kept and not alone.rivals and "more than for any other concept" in alone.sentence("query")


def test_the_query_own_terms_are_not_rivals_and_areas_that_do_not_stand_out_are_dropped():
    _, inside, noise = _maps()
    query = noise() + 1.0 * inside
    part = noise() + 3.0 * inside  # e.g. "B cells" inside an immune infiltrate
    kept = specificity(query, ["part"], part[:, None], inside, exclude={"part"}, margin=0.5)
    assert kept.kept and kept.best_rival is None
    low = specificity(noise() - 1.0 * inside, ["flat"], noise()[:, None], inside, exclude=set(), margin=5.0)
    assert not low.kept  # below the rest of the slide: not a candidate, whatever the margin


def test_record_is_plain_and_writable():
    rec = Specificity(1.23456, ("a", 1.0), [("a", 1.0)], True).to_dict()
    assert rec == {"query_standout": 1.235, "kept": True, "best_rival": "a", "best_rival_standout": 1.0,
                   "rivals": ["a"], "rivals_standout": [1.0], "areas": "candidates"}
    regions = Specificity(0.2, ("a", 1.5), [("a", 1.5)], False, areas="regions").sentence("q")
    assert "these regions stand out more for 'a'" in regions and "none is shown" not in regions


def test_a_region_and_the_cell_types_it_holds_are_related_by_their_markers():
    voc = load_vocabulary()
    immune = voc.related(["immune infiltrate"])
    assert {"immune infiltrate", "B cells", "T cells", "plasma cells"} <= immune
    assert "adipose tissue" not in immune and "invasive cancer" not in immune
    assert "B cells" in voc.related([], genes=["MS4A1"])  # a named gene relates its terms
    assert "T cells" in voc.related([], proteins=["CD3e"])  # so does a named marker
    assert voc.related(["no such term"]) == {"no such term"}
