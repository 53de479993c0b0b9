"""Absolute relevance on real sections: queries for what is not in breast tissue, and nonsense, find
no region and say so; a labelled class present in the section still finds its region; the CLI and
the UI give the same answer for the same query and slide."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.search.engine import SearchEngine

ABSENT = ["hepatocytes", "retina", "skeletal muscle", "thyroid colloid", "bone marrow", "purple elephant on a bicycle"]
LABELS = ["invasive cancer", "cancer in situ", "immune infiltrate", "breast glands", "connective tissue", "adipose tissue"]


@pytest.fixture(scope="module")
def b1(data_dir):
    """Section B1 (pathologist labels, patient B: the shipped text model never saw it) with its measured
    transcriptome embedded — the measured route over a whole real section."""
    from spotwhisper.io import read_her2st
    from spotwhisper.language import TextExpressionModel

    adata = read_her2st(data_dir, "B1", with_image=False)
    adata.obsm["text_emb_measured"] = TextExpressionModel.from_pretrained().encode_expression(adata)
    return adata


@pytest.fixture(scope="module")
def measured(b1):
    engine = SearchEngine({"B1": b1})
    weights = {r: 0.0 for r in engine.cfg.weights} | {"measured": 1.0}
    return engine, weights


@pytest.mark.parametrize("query", ABSENT)
def test_absent_concepts_find_no_region_on_a_whole_section(measured, query):
    engine, weights = measured
    res = engine.search(query, weights=weights, explain=False)
    hits = res.slides[0]
    assert res.readable and not res.found and hits.regions == []
    assert hits.best_spot < res.threshold or "isolated" in hits.no_region_reason(res.threshold, query)
    assert f"no region of B1 matches '{query}': best spot" in res.summary()


def test_absent_concepts_find_no_region_on_the_he_slide(mini_slide):
    engine = SearchEngine({"C2": mini_slide})
    for query in ABSENT:
        res = engine.search(query, explain=False)
        assert set(res.routes) >= {"transcriptome", "image"} and not res.found, query
        assert f"no region of C2 matches '{query}'" in res.summary()


def test_a_labelled_class_present_in_the_section_finds_its_region(measured, b1):
    engine, weights = measured
    res = engine.search("invasive cancer", weights=weights, explain=False)
    hits = res.slides[0]
    assert res.found and hits.regions
    labels = b1.obs[keys.LABEL].astype(str).to_numpy()
    scored = np.isin(labels, LABELS)
    spots = np.concatenate([r.spots for r in hits.regions])
    spots = spots[scored[spots]]
    prevalence = (labels[scored] == "invasive cancer").mean()
    precision = (labels[spots] == "invasive cancer").mean()
    assert precision >= 2 * prevalence, (precision, prevalence)
    assert "B1: " in res.summary() and "region(s)" in res.summary()


def test_the_kinds_of_a_concept_count_with_it(measured, b1):
    """"immune cells" names two terms ("immune cells", and "immune infiltrate" by synonym) and has kinds ("T cells",
    "B cells" …, vocabulary ``narrower``): their reference descriptions count with the query, so its relevance
    is at least what it is without them, higher where they describe the spot; "T cells" itself is unchanged."""
    engine, weights = measured
    assert engine.vocabulary.counted_with("immune cells")[:2] == ["immune infiltrate", "immune cells"]
    plain = SearchEngine({"B1": b1}, text_model=engine.text)
    plain.vocabulary.terms["immune cells"].narrower = []
    assert "T cells" not in plain.vocabulary.counted_with("immune cells")

    def relevance(e, q):
        return e.search(q, weights=weights, explain=False).slides[0].calibrated["measured"]

    kinds, without = relevance(engine, "immune cells"), relevance(plain, "immune cells")
    assert (kinds >= without - 1e-9).all() and (kinds > without + 0.1).any()
    np.testing.assert_allclose(relevance(engine, "T cells"), relevance(plain, "T cells"))


def test_a_vocabulary_names_only_its_own_terms_as_narrower(tmp_path):
    from spotwhisper.prompts import load_vocabulary

    bad = tmp_path / "vocabulary.yaml"
    bad.write_text("terms:\n  immune cells:\n    narrower: [T cells]\n")
    with pytest.raises(ValueError, match="narrower terms that are not other terms"):
        load_vocabulary(bad)


def test_a_present_class_is_found_on_the_he_slide(mini_slide):
    res = SearchEngine({"C2": mini_slide}).search("invasive cancer", explain=False)
    assert res.found and res.slides[0].regions[0].mean_score >= res.threshold


def test_collection_answer_names_the_slides_without_a_region(mini_slide, b1):
    engine = SearchEngine({"C2": mini_slide, "B1": b1})
    res = engine.search("invasive cancer", weights={"measured": 1.0}, explain=False)
    assert {h.slide for h in res.slides} == {"C2", "B1"}
    nothing = engine.search("retina", weights={"measured": 1.0}, explain=False)
    assert nothing.without_regions() == [h.slide for h in nothing.slides]
    assert "No region matches 'retina' on 2 of 2 slides" in nothing.summary()


def test_cli_and_ui_give_the_same_answer(mini_collection, tmp_path, capsys):
    """One query, one slide: the CLI (whole collection) and the UI (slide on screen) agree spot for spot."""
    import pandas as pd

    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui import handlers
    from spotwhisper.ui.config import UIConfig

    index_dir, name = mini_collection
    query = "tertiary lymphoid structures"
    out = tmp_path / "cli"
    assert main(["search", query, "--collection", name, "--index-dir", str(index_dir), "--out-dir", str(out),
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    table = pd.read_csv(out / "C2_tertiary_lymphoid_structures.csv")

    engine = open_engine(name, index_dir)
    cfg = UIConfig()
    view = handlers.new_view(engine, cfg)
    _, view = handlers.run_search(engine, view, query, cfg)
    hits = view.hits("C2")
    slide = cli["slides"][0]
    assert slide["slide"] == "C2" and cli["threshold"] == view.threshold
    assert np.allclose(table["fused"].to_numpy(), hits.fused, atol=1e-9, equal_nan=True)
    assert slide["spots_at_threshold"] == int((hits.fused >= view.threshold).sum())
    assert [r["spots"] for r in slide["regions"]] == [r.n_spots for r in hits.regions]
