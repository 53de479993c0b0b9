"""UI handlers without a browser: intent routing, search/contrast/explain actions, re-fusing and
re-thresholding the cached result, overlay and top tiles, on the mini C2 collection."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from spotwhisper import keys
from spotwhisper.search.regions import find_regions
from spotwhisper.ui import handlers as h
from spotwhisper.ui.chat import EMPTY_REPLY, HELP_REPLY, respond, route_intent
from spotwhisper.ui.config import load_ui_config
from spotwhisper.ui.display import (
    evidence_table,
    overlay,
    regions_frame,
    slide_picture,
    spot_at,
    spot_spacing,
    tile_gallery,
)

IMMUNE = "show me immune infiltrate"


@pytest.mark.parametrize(
    "message, kind, query, negative, region",
    [
        ("", "empty", "", "", None),
        ("   \n ", "empty", "", "", None),
        ("help", "help", "", "", None),
        ("show me tertiary lymphoid structures", "search", "tertiary lymphoid structures", "", None),
        ("where is PD-L1 high?", "search", "PD-L1 high", "", None),
        ("where are the B cells on this slide?", "search", "B cells", "", None),
        ("fibrosis", "search", "fibrosis", "", None),
        ("compare tumour and stroma", "compare", "tumour", "stroma", None),
        ("invasive cancer vs stroma", "compare", "invasive cancer", "stroma", None),
        ("show me tumour but not stroma", "contrast", "tumour", "stroma", None),
        ("invasive cancer minus stroma", "contrast", "invasive cancer", "stroma", None),
        ("which genes explain the highlighted region?", "explain", "", "", None),
        ("explain region 2", "explain", "", "", 2),
        ("why is region 3 lit?", "explain", "", "", 3),
        ("find slides with immune infiltrate", "slides", "immune infiltrate", "", None),
        ("which slides have TLS?", "slides", "TLS", "", None),
        ("rank sections by immune infiltrate", "slides", "immune infiltrate", "", None),
        ("immune infiltrate across all slides", "slides", "immune infiltrate", "", None),
    ],
)
def test_route_intent(message, kind, query, negative, region):
    intent = route_intent(message)
    assert (intent.kind, intent.query, intent.negative, intent.region) == (kind, query, negative, region)


@pytest.fixture(scope="module")
def engine(mini_collection):
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    return open_engine(name, index_dir=index_dir)


@pytest.fixture(scope="module")
def cfg():
    return load_ui_config()


@pytest.fixture(scope="module")
def searched(engine, cfg):
    """(answer, view) after the immune-infiltrate query on the mini slide."""
    return respond(engine, h.new_view(engine, cfg), IMMUNE, [], cfg)


def test_search_answer_lists_regions_with_numbers(engine, searched):
    text, view = searched
    hits = view.hits()
    assert view.slide == "C2" and hits is not None and hits.regions
    assert view.shown.routes == view.base.routes  # every group on = the engine's own fusion
    np.testing.assert_allclose(hits.fused, view.base.slides[0].fused, atol=1e-9)
    r1 = hits.regions[0]
    assert f"region 1: {r1.n_spots} spots" in text and f"mean score {r1.mean_score:.2f}" in text
    assert f"{len(hits.regions)} region(s)" in text and "why (region 1 vs rest of slide): higher" in text


def test_empty_and_help_leave_the_view(engine, cfg, searched):
    _, view = searched
    for message, expected in (("", EMPTY_REPLY), ("  ", EMPTY_REPLY), ("help", HELP_REPLY)):
        text, after = respond(engine, view, message, [], cfg)
        assert text == expected and after is view


def test_threshold_rethresholds_without_searching(engine, cfg, searched, monkeypatch):
    _, view = searched
    monkeypatch.setattr(engine, "search", lambda *a, **k: pytest.fail("the slider must not search again"))
    lower = view.threshold - 0.75
    low = h.update_view(engine, view, cfg, threshold=lower)
    hits = low.hits()
    np.testing.assert_allclose(hits.fused, view.hits().fused)
    expected = find_regions(hits.adata.obsm[keys.SPATIAL], hits.fused, lower, spot_spacing(hits.adata),
                            spot_spacing(hits.adata), 1.0, engine.cfg.link, engine.cfg.min_region_spots, outline=False)
    assert [r.n_spots for r in hits.regions] == [r.n_spots for r in expected]
    assert sum(r.n_spots for r in hits.regions) > sum(r.n_spots for r in view.hits().regions)
    # above every spot: no region, and the answer says so
    none = h.update_view(engine, view, cfg, threshold=float(np.nanmax(hits.fused)) + 0.1)
    assert none.hits().regions == []
    assert "no region of C2 matches 'immune infiltrate'" in h.describe_result(none, cfg)
    assert "no region of C2 matches 'immune infiltrate'" in h.map_caption(none)
    text, _ = h.run_explain(engine, none, cfg)
    assert "no region of C2 matches 'immune infiltrate'" in text and "nothing to explain" in text


def test_route_toggles_reweight_cached_scores(engine, cfg, searched):
    _, view = searched
    base = view.base.slides[0]
    assert {"transcriptome", "protein"} <= set(base.calibrated)
    only = h.update_view(engine, view, cfg, groups=["protein"])
    assert only.shown.routes == ["protein"]
    np.testing.assert_allclose(only.hits().fused, base.calibrated["protein"], atol=1e-9)  # one route: its relevance
    assert not np.allclose(only.hits().fused, view.hits().fused)
    back = h.update_view(engine, only, cfg, groups=list(cfg.route_groups))
    np.testing.assert_allclose(back.hits().fused, view.hits().fused, atol=1e-9)
    # no route ticked: nothing is fused and the view says so (no stale map)
    none = h.update_view(engine, view, cfg, groups=[])
    assert none.shown is None and none.hits() is None and none.message == h.NO_ROUTE
    assert "tick at least one route" in h.map_caption(none) and h.describe_result(none, cfg) == h.NO_ROUTE
    assert "tick at least one route" in h.run_explain(engine, none, cfg)[0]
    if "image" not in base.calibrated:  # shipped defaults: no aligned head, so image–text alone cannot answer
        alone = h.update_view(engine, view, cfg, groups=["image–text"])
        assert alone.shown is None and "none of the selected routes" in alone.message


def test_toggles_show_the_routes_that_answered(engine, cfg):
    view = h.new_view(engine, cfg)
    view = h.update_view(engine, view, cfg, groups=["transcriptome"])  # the user unticked two groups
    _, view = h.run_search(engine, view, "immune infiltrate", cfg)  # a new question uses every route
    assert set(view.shown.routes) == set(view.base.routes)
    assert view.groups == h.used_groups(view.shown, cfg.route_groups)
    # a query no protein marker or term answers: the protein box is not shown ticked
    _, plain = h.run_search(engine, view, "fibrosis", cfg)
    if "protein" not in plain.shown.routes:
        assert "protein" not in plain.groups
    assert all(set(cfg.route_groups[g]) & set(plain.shown.routes) for g in plain.groups)


def test_explain_regions(engine, cfg, searched):
    _, view = searched
    hits = view.hits()
    text, _ = respond(engine, view, "which genes explain the highlighted region?", [], cfg)
    top_gene = hits.explanation.genes["name"].iloc[0]
    assert text.startswith(f"Region 1 on C2 ({hits.regions[0].n_spots} spots") and top_gene in text
    assert "gradient × input" in text
    if len(hits.regions) > 1:
        text2, after2 = respond(engine, view, "explain region 2", [], cfg)
        r2 = hits.regions[1]
        assert text2.startswith(f"Region 2 on C2 ({r2.n_spots} spots") and after2.focus == 2
        expl = engine.explain("C2", r2.spots)
        assert after2.explained.genes["name"].tolist() == expl.genes["name"].tolist()
        assert evidence_table(after2.explained, 5)["name"].iloc[0] == expl.genes["name"].iloc[0]
    text3, _ = respond(engine, view, "explain region 99", [], cfg)
    assert "there is no region 99" in text3
    fresh = h.new_view(engine, cfg)
    assert "search first" in respond(engine, fresh, "why?", [], cfg)[0]


def test_compare_is_two_colours_and_minus_is_a_contrast(engine, cfg):
    from spotwhisper.search.compare import ONLY_A, ONLY_B

    view = h.new_view(engine, cfg)
    text, cview = respond(engine, view, "compare tumour and stroma", [], cfg)
    comp = cview.comparison
    assert comp is not None and (comp.query_a, comp.query_b) == ("tumour", "stroma")
    expected = view.threshold if cfg.compare_threshold is None else cfg.compare_threshold  # null: the search's
    assert cview.active_threshold == expected and cview.threshold == view.threshold
    assert f"A: tumour {comp.count(ONLY_A)} spots" in text and f"B: stroma {comp.count(ONLY_B)} spots" in text
    assert "compare:" in h.map_caption(cview)
    higher = h.update_view(engine, cview, cfg, threshold=1.5)  # the slider moves the comparison's threshold
    assert higher.comparison is not None and higher.active_threshold == 1.5
    assert higher.comparison.count(ONLY_A) <= comp.count(ONLY_A)
    text, view = respond(engine, view, "tumour minus stroma", [], cfg)
    assert view.comparison is None and view.shown.query.negative == "stroma" and "minus 'stroma'" in text
    n = view.hits().adata.n_obs
    lean = [int(s) for s in text.split("route, ")[1].split(" of ")[:1]]
    assert f" of {n} spots" in text and 0 <= lean[0] <= n
    raw = view.hits().routes["transcriptome"]
    assert lean[0] == int((raw > 0).sum())
    text, view = respond(engine, view, "find slides with immune infiltrate", [], cfg)
    assert text.startswith("Ranked 1 slide(s) for 'immune infiltrate'") and "1. C2:" in text


def test_bad_query_keeps_view(engine, cfg, searched):
    _, view = searched
    text, after = respond(engine, view, "x" * 400, [], cfg)
    assert "too long" in text and after is view


def test_overlay_marks_regions(engine, cfg, searched):
    _, view = searched
    hits = view.hits()
    img = np.asarray(overlay(hits, view.threshold, 600, cfg.crop_margin))
    assert max(img.shape[:2]) <= 600
    cyan = (img[..., 0] < 60) & (img[..., 1] > 200) & (img[..., 2] > 200)
    assert cyan.sum() > 50  # region outlines are drawn
    plain = np.asarray(slide_picture(hits.adata, 600, cfg.crop_margin))
    assert plain.shape == img.shape and (plain != img).any()
    no_regions = np.asarray(overlay(replace(hits, regions=[]), view.threshold, 600, cfg.crop_margin))
    assert ((no_regions[..., 0] < 60) & (no_regions[..., 1] > 200) & (no_regions[..., 2] > 200)).sum() < 5
    # clicking the picture finds the spot under the pointer: the region's best spot is among them
    r1 = hits.regions[0]
    best = int(r1.spots[np.argmax(hits.fused[r1.spots])])
    ys, xs = np.mgrid[0 : img.shape[0] : 6, 0 : img.shape[1] : 6]
    found = {spot_at(hits, float(x), float(y), 600, cfg.crop_margin) for x, y in zip(xs.ravel(), ys.ravel())}
    assert best in found and None in found
    assert regions_frame(hits)["spots"].tolist() == [r.n_spots for r in hits.regions]


def test_gallery_tiles_come_from_full_resolution(cfg, searched):
    from spotwhisper.io.spatial import open_source_slide

    _, view = searched
    hits = view.hits()
    tiles = tile_gallery(hits, 4, 96, 1.0)
    top = hits.top_spots(4)
    assert [c.split(" · ")[0] for _, c in tiles] == top["spot"].tolist()
    assert all(t.shape == (96, 96, 3) for t, _ in tiles)
    slide, scale = open_source_slide(hits.adata)
    x, y = top["x"].iloc[0] * scale, top["y"].iloc[0] * scale
    half = spot_spacing(hits.adata) * scale / 2
    x0, y0, side = (int(np.round(v)) for v in (x - half, y - half, 2 * half))
    full = np.asarray(Image.fromarray(slide.read_region((x0, y0), 0, (side, side))).resize((96, 96)))
    assert np.abs(full.astype(int) - tiles[0][0].astype(int)).mean() < 12
    assert f"score {top['score'].iloc[0]:.2f}" in tiles[0][1]


def test_serve_command_names_a_missing_collection(tmp_path, capsys):
    from spotwhisper.cli import main

    assert main(["serve", "--collection", "nope", "--index-dir", str(tmp_path)]) == 1
    assert "nope" in capsys.readouterr().err


def test_shipped_ui_yaml_matches_defaults_and_env_overrides(monkeypatch):
    from spotwhisper.ui.config import ENV_BASE_URL, ENV_MODEL, UIConfig

    for var in (ENV_BASE_URL, ENV_MODEL, "SPOTWHISPER_LLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert load_ui_config() == UIConfig() and not UIConfig().llm.enabled
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:1/v1")
    monkeypatch.setenv(ENV_MODEL, "m")
    cfg = load_ui_config()
    assert cfg.llm.enabled and cfg.llm.base_url == "http://127.0.0.1:1/v1" and cfg.llm.timeout_s == 60.0


def test_answer_streams_in_steps(engine, cfg):
    from spotwhisper.ui.chat import respond_stream

    steps, explained_then = [], []
    for step in respond_stream(engine, h.new_view(engine, cfg), IMMUNE, [], cfg):
        steps.append(step)  # what the browser gets at each step (hits are explained in place later)
        explained_then.append(step[1].hits() is not None and step[1].hits().explanation is not None)
    assert steps[0][0] == "Searching 'immune infiltrate' on C2…" and not steps[0][2]
    assert steps[0][1].shown is None  # said before any work is done
    regions_first = steps[1]
    assert regions_first[1].hits().regions and not explained_then[1]  # map and regions before the genes
    assert "region 1:" in regions_first[0] and "why (region 1" not in regions_first[0]
    last_text, last_view, done = steps[-1]
    assert done and "why (region 1 vs rest of slide): higher" in last_text
    assert last_view.hits().explanation is not None
    assert "Share of the tissue of C2: region 1" in last_text
    share = 100 * last_view.hits().regions[0].n_spots / last_view.hits().adata.n_obs
    assert f"region 1 {share:.1f}%" in last_text
    assert regions_frame(last_view.hits())["percent_tissue"].iloc[0] == pytest.approx(share, abs=0.05)
    quick = list(respond_stream(engine, last_view, "help", [], cfg))
    assert len(quick) == 1 and quick[0][0] == HELP_REPLY


def test_annotations_round_trip_as_geojson(searched):
    import json

    from spotwhisper.ui.annotations import from_geojson, from_regions, to_geojson

    _, view = searched
    hits = view.hits()
    kept = from_regions(hits, "TLS", "immune infiltrate")
    assert [a["region"] for a in kept] == [r.id for r in hits.regions]
    geo = json.loads(json.dumps(to_geojson(kept)))
    f0 = geo["features"][0]
    assert f0["properties"]["objectType"] == "annotation" and f0["properties"]["classification"]["name"] == "TLS"
    ring = f0["geometry"]["coordinates"][0] if f0["geometry"]["type"] == "Polygon" else f0["geometry"]["coordinates"][0][0]
    assert ring[0] == ring[-1]  # closed, as GeoJSON wants
    back = from_geojson(json.dumps(geo))
    assert [(a["slide"], a["label"], a["region"]) for a in back] == [("C2", "TLS", a["region"]) for a in kept]
    np.testing.assert_allclose(back[0]["polygons"][0][:5], kept[0]["polygons"][0][:5])
    qupath = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
              "properties": {"classification": {"name": "Tumor"}}}
    assert from_geojson(json.dumps(qupath), default_slide="C2")[0]["label"] == "Tumor"
    for bad, why in (("not json", "not JSON"), ('{"type": "Point"}', "FeatureCollection"),
                     ('{"type": "FeatureCollection", "features": []}', "no polygon")):
        with pytest.raises(ValueError, match=why):
            from_geojson(bad)


def test_side_by_side_searches_both_slides_on_one_scale(mini_slide, cfg):
    from spotwhisper import keys as k
    from spotwhisper.search.engine import SearchEngine

    other = mini_slide.copy()
    other.obs[k.SECTION] = "C2-copy"
    engine = SearchEngine({"C2": mini_slide, "C2-copy": other})
    view = replace(h.new_view(engine, cfg), second="C2-copy")
    _, view = h.run_search(engine, view, "immune infiltrate", cfg)
    assert sorted(s.slide for s in view.shown.slides) == ["C2", "C2-copy"]
    a, b = view.hits("C2"), view.hits("C2-copy")
    np.testing.assert_allclose(a.fused, b.fused, atol=1e-9)  # same spots, one calibration over both slides
    alone = h.run_search(engine, h.new_view(engine, cfg), "immune infiltrate", cfg)[1]
    assert [s.slide for s in alone.shown.slides] == ["C2"]


def test_viewer_payload_of_a_view(engine, cfg, searched):
    from spotwhisper.ui.screen import region_at, viewer_payload
    from spotwhisper.ui.viewer import ViewerRegistry

    _, view = searched
    reg = ViewerRegistry()
    pay = viewer_payload(reg, "s1", None, engine, view)
    hits = view.hits()
    assert pay["slide"] == "C2" and pay["dzi"].startswith("sw/v/") and pay["width"] > 9000
    assert 0.6 < pay["mpp"] < 0.9 and pay["scale"]["threshold"] == view.threshold
    assert [r["id"] for r in pay["regions"]] == [r.id for r in hits.regions]
    assert "% of the tissue" in pay["regions"][0]["title"] and pay["layer"]["url"].endswith(".png")
    fit = pay["fit"]
    xy = np.asarray(hits.adata.obsm[keys.SPATIAL])
    assert fit["x"] < xy[:, 0].min() and fit["x"] + fit["w"] > xy[:, 0].max()  # opens framed on the spots
    again = viewer_payload(reg, "s1", None, engine, view)
    assert again["dzi"] == pay["dzi"] and again["layer"]["url"] == pay["layer"]["url"]  # nothing reloads
    r1 = hits.regions[0]
    best = int(r1.spots[np.argmax(hits.fused[r1.spots])])
    assert region_at(view, engine, "C2", *xy[best]) == 1  # a click on its best spot (source image = slide px)
    none = viewer_payload(reg, "s1", None, engine, h.update_view(engine, view, cfg, groups=[]))
    assert none["layer"] is None and none["regions"] == [] and "tick at least one route" in none["message"]
    _, comp = respond(engine, view, "compare tumour and stroma", [], cfg)
    cpay = viewer_payload(reg, "s1", None, engine, comp)
    assert cpay["scale"]["kind"] == "classes" and [i["label"] for i in cpay["scale"]["items"]] == [
        "A: tumour", "B: stroma", "both"]
