"""The search engine on a real processed slide (C2 window): routes, absolute relevance, fusion,
regions, contrast, proteins, explanations, bad queries, collections and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.search.engine import SearchEngine
from spotwhisper.search.query import QueryError


@pytest.fixture(scope="module")
def engine(mini_slide):
    return SearchEngine({"C2": mini_slide})


def test_routes_give_absolute_relevance_fused_into_regions(engine, mini_slide):
    res = engine.search("immune infiltrate")
    assert {"transcriptome", "image", "protein"} <= set(res.routes)
    hits = res.slides[0]
    assert hits.fused.shape == (mini_slide.n_obs,)
    w = engine.cfg.weights
    expect = sum(w[r] * hits.calibrated[r] for r in res.routes) / sum(w[r] for r in res.routes)
    assert np.allclose(hits.fused, expect)
    assert res.threshold == engine.cfg.relevance.threshold and "log-odds" in res.unit
    for region in hits.regions:
        assert (hits.fused[region.spots] >= res.threshold).all() and region.n_spots >= engine.cfg.min_region_spots
    top = hits.top_spots(5)
    assert list(top["score"]) == sorted(top["score"], reverse=True)
    # absolute: a spot's relevance does not depend on which other slides are searched with it
    other = mini_slide[: mini_slide.n_obs // 2].copy()
    both = SearchEngine({"C2": mini_slide, "half": other}, text_model=engine.text).search("immune infiltrate", explain=False)
    assert np.allclose(next(h for h in both.slides if h.slide == "C2").fused, hits.fused)


def test_measured_route_follows_immune_cell_proportions(engine, mini_slide):
    """The text model never saw patient C: its score for 'immune infiltrate' on measured expression
    must rise with the deconvolved immune-cell share of the spot."""
    res = engine.search("immune infiltrate", weights={"measured": 1.0})
    immune = sum(mini_slide.obs[f"deconv_{t}"] for t in ("B-cells", "T-cells", "Plasma Cells", "Myeloid")).to_numpy()
    rho = spearmanr(res.slides[0].routes["measured"], immune).statistic
    assert rho > 0.3


def test_contrast_subtracts_route_scores(engine):
    a = engine.search("invasive cancer", weights={"protein": 0})
    b = engine.search("immune infiltrate", weights={"protein": 0})
    ab = engine.search("invasive cancer minus immune infiltrate", weights={"protein": 0})
    assert ab.query.is_contrast and ab.query.negative == "immune infiltrate"
    for r in ("transcriptome", "image"):
        assert np.allclose(ab.slides[0].routes[r], a.slides[0].routes[r] - b.slides[0].routes[r], atol=1e-5)


def test_protein_route_reads_the_named_marker_against_its_reference(engine, mini_slide):
    from spotwhisper.search.protein_reference import load_protein_reference
    from spotwhisper.search.relevance import level_relevance

    markers = [str(m) for m in mini_slide.uns[keys.PROTEIN_MARKERS]]
    raw = np.asarray(mini_slide.obsm[keys.PROTEINS_RAW])[:, markers.index("PanCK")]
    high = engine.search("PanCK high", explain=False).slides[0]
    low = engine.search("PanCK low", explain=False).slides[0]
    assert np.allclose(high.routes["protein"], raw) and np.allclose(low.routes["protein"], -raw)
    ref = load_protein_reference()
    assert np.allclose(high.calibrated["protein"], level_relevance(raw, ref.of("PanCK"), engine.cfg.relevance, ref.n_spots))
    from scipy.stats import spearmanr

    # relevance is a monotone map of the level against the reference: the order of spots is kept
    assert spearmanr(high.calibrated["protein"], raw)[0] > 0.95
    assert spearmanr(low.calibrated["protein"], raw)[0] < -0.95
    assert "protein" not in engine.search("PanCK high", weights={"protein": 0}, explain=False).routes


def test_flat_marker_is_answered_with_the_qc_caveat_not_a_map(engine):
    """PD-L1 (CD274) is flat on the C2 window (protein QC: not informative): no region, the caveat instead."""
    res = engine.search("where is PD-L1 high?", explain=False)
    hits = res.slides[0]
    assert not hits.regions and not res.found
    assert hits.caveat and "PDL1 is not informative on C2" in hits.caveat and "protein QC" in hits.caveat
    assert "no map for PDL1 on C2" in res.summary()


def test_no_hits_and_bad_queries(engine):
    res = engine.search("adipose tissue", threshold=50.0)
    assert res.slides[0].regions == [] and not res.found
    assert "no region of C2 matches 'adipose tissue'" in res.summary() and "(threshold 50)" in res.summary()
    with pytest.raises(QueryError, match="empty query"):
        engine.search("   ")
    with pytest.raises(QueryError, match="query too long"):
        engine.search("tumour " * 100)


def test_unreadable_query_gets_no_map_and_says_so(engine):
    from spotwhisper.language import UnreadableQueryWarning

    for query in ("肿瘤浸润淋巴细胞", "лимфоциты"):  # another script: cannot be read at all
        with pytest.warns(UnreadableQueryWarning):
            res = engine.search(query)
        assert not res.readable and not res.found and res.routes == []
        assert all(np.isnan(h.fused).all() and not h.regions for h in res.slides)
        text = res.summary()
        assert text.startswith("Cannot read this query") and "No map is drawn" in text and "another script" in text
    with pytest.warns(UnreadableQueryWarning):  # random letters are read, badly: scored, said, and found nowhere
        res = engine.search("asdfgh")
    assert res.readable and not res.found and any("reads only 0%" in n for n in res.notes)
    assert "no region of C2 matches 'asdfgh'" in res.summary()
    ok = engine.search("immune infiltrate")
    assert ok.readable and not any("reads only" in n for n in ok.notes)


def test_explanation_names_genes_higher_in_the_region(engine, mini_slide):
    res = engine.search("immune infiltrate")
    hits = res.slides[0]
    assert hits.regions, "expected at least one immune region on the C2 window"
    ex = hits.explanation
    top = ex.genes.iloc[0]
    inside = np.zeros(mini_slide.n_obs, bool)
    inside[hits.regions[0].spots] = True
    col = list(mini_slide.var_names).index(top["name"])
    x = mini_slide.layers["log1p"][:, col]
    assert x[inside].mean() > x[~inside].mean()
    assert ex.proteins is not None and len(hits.attributions) == engine.cfg.top_genes
    assert "higher" in ex.sentence()


def test_collection_search_and_cli(mini_collection, tmp_path, capsys, mini_slide):
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    eng = open_engine(name, index_dir)
    assert eng.slide_names() == ["C2"]
    mem = SearchEngine({"C2": mini_slide}).search("invasive cancer")
    disk = eng.search("invasive cancer")
    assert np.allclose(mem.slides[0].fused, disk.slides[0].fused, atol=1e-5)
    out = tmp_path / "res"
    assert main(["search", "invasive cancer", "--collection", name, "--index-dir", str(index_dir),
                 "--out-dir", str(out), "--threshold", "-1.5"]) == 0
    text = capsys.readouterr().out
    assert "Searched 'invasive cancer'" in text
    assert (out / "C2_invasive_cancer.png").exists() and (out / "C2_invasive_cancer.csv").exists()
    geo = json.loads((out / "C2_invasive_cancer.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    assert main(["search", "x", "--collection", "nope", "--index-dir", str(index_dir)]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["search", "x", "--collection", name, "--index-dir", str(index_dir), "--weights", "image"]) == 1
    assert "expected ROUTE=NUMBER" in capsys.readouterr().err


def test_collection_built_with_another_text_model_is_refused(mini_collection):
    import torch

    from spotwhisper.index.errors import ModelMismatchError
    from spotwhisper.language import TextExpressionModel
    from spotwhisper.search.engine import open_engine

    other = TextExpressionModel.from_pretrained()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(ModelMismatchError):
        open_engine(mini_collection[1], mini_collection[0], text_model=other)


def test_faiss_narrows_a_collection_of_many_slides(mini_slide, tmp_path):
    """Above ``prefilter_slides`` slides, the FAISS text route picks the slides holding the spots
    nearest the query. The real C2 window is split into two slides by that very similarity."""
    import dataclasses

    from spotwhisper.collection import index_slides
    from spotwhisper.search.engine import open_engine

    plain = SearchEngine({"C2": mini_slide})
    q = plain._query_vectors("immune infiltrate")["text"]
    emb = np.asarray(mini_slide.obsm[keys.TEXT_EMB], dtype=np.float64)
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    hot = cos >= np.median(cos)
    parts = []
    for name, sel in (("hot", hot), ("cold", ~hot)):
        part = mini_slide[sel].copy()
        part.obs[keys.SECTION] = name
        parts.append(part)
    index_slides(parts, "split", index_dir=tmp_path)

    narrow = open_engine("split", index_dir=tmp_path, cfg=dataclasses.replace(plain.cfg, prefilter_slides=1))
    res = narrow.search("immune infiltrate", explain=False)
    assert [h.slide for h in res.slides] == ["hot"]
    assert any("narrowed the search to 1 of 2 slides" in n for n in res.notes)
    everything = open_engine("split", index_dir=tmp_path).search("immune infiltrate", explain=False)
    assert sorted(h.slide for h in everything.slides) == ["cold", "hot"]
    assert not any("narrowed" in n for n in everything.notes)
    assert [h.slide for h in narrow.search("immune infiltrate", slides=["cold"], explain=False).slides] == ["cold"]


def test_a_named_gene_without_signal_is_answered_with_a_caveat(engine, mini_slide):
    from spotwhisper.search.scoring import named_genes

    x = np.asarray(mini_slide.layers["log1p"])
    spread = np.percentile(x, 99, axis=0) - np.percentile(x, 1, axis=0)
    names = list(mini_slide.var_names)
    flat = next(g for g, r in zip(names, spread) if r < engine.cfg.relevance.min_gene_range and g.isupper() and g.isalnum())
    live = names[int(np.argmax(spread))]
    assert named_genes(f"where is {flat} high? not fat", mini_slide.var_names) == [flat]  # 'fat' is not the gene FAT
    res = engine.search(f"{flat} high", explain=False)
    assert not res.found and f"no map for {flat} on C2: no signal there" in res.summary()
    assert engine.search(f"{live} high", explain=False).slides[0].caveat is None
