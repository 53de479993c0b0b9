"""Comparing two queries (search/compare.py): classes, areas, shares and separating genes on real spots."""

from __future__ import annotations

import numpy as np
import pytest

from spotwhisper.search.compare import (
    BOTH,
    NEITHER,
    ONLY_A,
    ONLY_B,
    classify,
    compare_queries,
    region_mask,
    spot_area_mm2,
)


def test_classify_four_classes():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert classify(a, b).tolist() == [BOTH, ONLY_A, ONLY_B, NEITHER]


@pytest.fixture(scope="module")
def engine(mini_collection):
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    return open_engine(name, index_dir=index_dir)


def test_compare_two_queries_on_real_spots(engine):
    a, b = "immune infiltrate", "invasive cancer"
    comp, res_a, res_b = compare_queries(engine, a, b, "C2", threshold=None)
    ma, mb = region_mask(res_a.slides[0]), region_mask(res_b.slides[0])
    assert ma.any() and mb.any(), "both queries should have regions on the mini slide at the search threshold"
    assert comp.count(ONLY_A) == int((ma & ~mb).sum())
    assert comp.count(ONLY_B) == int((mb & ~ma).sum())
    assert comp.count(BOTH) == int((ma & mb).sum())
    n = res_a.slides[0].adata.n_obs
    assert comp.share(ONLY_A) == pytest.approx(100 * comp.count(ONLY_A) / n)
    area = spot_area_mm2(res_a.slides[0].adata)
    assert 0.03 < area < 0.05  # her2st: 200 µm spot pitch -> 0.04 mm² per spot
    assert comp.area_mm2(ONLY_B) == pytest.approx(comp.count(ONLY_B) * area)
    # separating genes: positive diff = higher in the only-A spots than in the only-B spots
    sep = comp.separating
    assert sep is not None and sep.n_in == comp.count(ONLY_A) and sep.n_out == comp.count(ONLY_B)
    x = res_a.slides[0].adata.layers["log1p"]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
    top = sep.genes.iloc[0]
    g = list(res_a.slides[0].adata.var_names).index(top["name"])
    diff = x[comp.classes == ONLY_A, g].mean() - x[comp.classes == ONLY_B, g].mean()
    assert diff == pytest.approx(top["diff"], rel=1e-4)
    assert (sep.proteins["diff"] > 0).any() and (sep.proteins["diff"] < 0).any()  # both sides kept
    text = comp.summary()
    assert f"A: {a} {comp.count(ONLY_A)} spots" in text and "% of the tissue" in text
    assert "Higher in A than in B:" in text and "Higher in B than in A:" in text


def test_compare_says_when_nothing_matches(engine):
    # at relevance 3.9 (log-odds) no spot of the mini slide reaches either query
    comp, res_a, res_b = compare_queries(engine, "immune infiltrate", "adipose tissue", "C2", threshold=3.9)
    assert not res_a.slides[0].regions and not res_b.slides[0].regions
    assert comp.separating is None and (comp.classes == NEITHER).all()
    text = comp.summary()
    assert "no region of C2 reaches the threshold: best spot" in text and "(threshold 3.9)" in text
    assert "nothing separates them" in text
