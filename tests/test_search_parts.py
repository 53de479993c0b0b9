"""Search building blocks: relevance and fusion, regions and outlines, overlay, GeoJSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.measure import points_in_poly

from spotwhisper.search.export import regions_geojson, write_geojson
from spotwhisper.search.config import RelevanceConfig
from spotwhisper.search.fusion import fuse
from spotwhisper.search.regions import find_regions, regions_table
from spotwhisper.search.relevance import ReferencePrompts, level_relevance, text_relevance
from spotwhisper.search.render import render_overlay


def grid(n=12, spacing=100.0):
    gx, gy = np.meshgrid(np.arange(n), np.arange(n))
    return np.stack([gx.ravel(), gy.ravel()], 1) * spacing + 50.0


def test_fusion_is_a_weighted_mean_of_the_routes_that_answer():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([10.0, 10.0, 40.0, 0.0])
    fused = fuse({"t": a, "p": b}, {"t": 1.0, "p": 1.0})
    assert np.allclose(fused[:3], (a[:3] + b[:3]) / 2)
    assert fused[3] == 0.0  # route t is NaN there, route p answers alone
    assert np.allclose(fuse({"t": a, "p": b}, {"t": 1.0, "p": 3.0})[:3], (a[:3] + 3 * b[:3]) / 4)
    only_t = fuse({"t": a, "p": b}, {"t": 1.0, "p": 0.0})
    assert np.allclose(only_t[:3], a[:3])
    with pytest.raises(ValueError, match="no route"):
        fuse({"t": a}, {"t": 0.0})


def test_text_relevance_is_the_log_odds_of_the_query_against_the_references():
    sq = np.array([0.5, 0.1])
    sb = np.array([[0.1, 0.2, 0.45], [0.6, 0.1, 0.0]])
    syn = np.array([False, False, True])
    t = text_relevance(sq, sb, syn, scale=10.0)
    e = np.exp(10 * np.column_stack([sq, sb]))
    p = (e[:, 0] + e[:, 3]) / e.sum(1)  # the near-synonym counts with the query
    assert np.allclose(t, np.log(p / (1 - p)))
    # it depends on the spot alone: scoring one spot gives the same as scoring both
    assert np.isclose(text_relevance(sq[:1], sb[:1], syn, 10.0)[0], t[0])
    # "A minus B": B joins the competitors, so relevance can only fall
    worse = text_relevance(sq, sb, syn, 10.0, negative=np.array([[0.6], [0.0]]))
    assert (worse < t).all() and worse[0] < t[0] - 1
    with pytest.raises(ValueError, match="near-synonym"):
        text_relevance(sq, sb, np.ones(3, bool), 10.0)


def test_reference_prompts_cache_and_synonyms():
    refs = ReferencePrompts(["fat", "tumour", "stroma", "fat"])
    assert refs.names == ["fat", "tumour", "stroma"]
    calls = []
    emb = np.eye(3, dtype=np.float32)
    got = refs.embeddings("text", lambda names: calls.append(names) or emb, "model-1")
    assert refs.embeddings("text", lambda names: calls.append(names) or emb) is got and len(calls) == 1
    other = ReferencePrompts(["fat", "tumour", "stroma"])  # another engine, the same model: shared
    assert other.embeddings("text", lambda names: calls.append(names) or emb, "model-1") is got and len(calls) == 1
    spots = np.array([[1.0, 0, 0], [0, 0.6, 0.8]], dtype=np.float32)
    sims = refs.spot_sims(("S", 1, "t"), spots, got)
    assert sims.shape == (2, 3) and refs.spot_sims(("S", 1, "t"), spots * 0, got) is sims  # cached per key
    q = np.array([0.95, 0.31, 0], dtype=np.float32)
    assert refs.synonyms(got, q, 0.9).tolist() == [True, False, False]
    assert refs.synonyms(got, q, 0.99, exclude=["Stroma"]).tolist() == [False, False, True]
    assert refs.synonyms(got, q, -1.0, exclude=["fat"]).tolist() == [True, False, False]  # all close: only the name


def test_protein_levels_map_onto_the_threshold_at_the_hit_quantile():
    cfg = RelevanceConfig(threshold=-1.0, protein_hit_quantile=0.9)
    quantiles = np.linspace(0.0, 10.0, 101)  # uniform reference on [0, 10]
    rel = level_relevance(np.array([9.0, 5.0, 9.9, 50.0, np.nan]), quantiles, cfg)
    assert rel[0] == pytest.approx(-1.0)  # the 90th percentile sits at the threshold
    assert rel[1] < -1.0 < rel[2] < rel[3]  # median below, the tail above, beyond the reference capped
    assert np.isnan(rel[4])


def test_two_blobs_become_two_regions_with_outlines():
    coords = grid()
    scores = np.zeros(len(coords))
    blob_a = (coords[:, 0] <= 350) & (coords[:, 1] <= 350)  # 4 × 4 spots top-left
    blob_b = (coords[:, 0] > 850) & (coords[:, 1] > 950)  # 3 × 2 bottom-right
    scores[blob_a], scores[blob_b] = 2.0, 1.5
    regions = find_regions(coords, scores, threshold=1.0, spacing_px=100, tile_px=100, mpp=1.0)
    assert [r.n_spots for r in regions] == [16, 6]
    assert regions[0].area_um2 == pytest.approx(16 * 100 * 100)
    assert set(regions[0].spots) == set(np.flatnonzero(blob_a))
    # the outline encloses every spot of its region and none of the other
    poly = regions[0].polygons[0]
    assert points_in_poly(coords[blob_a], poly).all()
    assert not points_in_poly(coords[blob_b], poly).any()
    assert regions_table(regions)[1]["spots"] == 6
    assert find_regions(coords, scores, threshold=5.0, spacing_px=100, tile_px=100, mpp=1.0) == []


def test_diagonal_spots_join_but_distant_ones_do_not():
    coords = np.array([[0, 0], [100, 100], [500, 500]], float)
    regions = find_regions(coords, np.ones(3), 0.5, spacing_px=100, tile_px=100, mpp=1.0, link=1.5)
    assert sorted(r.n_spots for r in regions) == [1, 2]


def test_overlay_marks_high_scores():
    coords = grid(6, 50.0)
    scores = np.where(coords[:, 0] < 150, 1.0, 0.0)
    thumb = np.full((300, 300, 3), 128, np.uint8)
    regions = find_regions(coords, scores, 0.5, 50, 50, 1.0)
    img = np.asarray(render_overlay(thumb, 1.0, coords, scores, 50, threshold=0.5, regions=regions))
    left, right = img[100:200, 10:140].astype(int), img[100:200, 200:290].astype(int)
    # inferno: high scores bright yellow, low scores black (and faint below the threshold)
    assert left[..., 0].mean() > right[..., 0].mean() + 60
    assert (img == (0, 255, 255)).all(axis=-1).any()  # a cyan outline was drawn


def test_geojson_is_qupath_style(tmp_path):
    coords = grid(4)
    regions = find_regions(coords, np.ones(16), 0.5, 100, 100, 1.0)
    path = write_geojson(regions, "immune infiltrate", tmp_path / "r.geojson", slide="C2")
    data = json.loads(path.read_text())
    feat = data["features"][0]
    assert data["type"] == "FeatureCollection" and feat["geometry"]["type"] == "Polygon"
    ring = feat["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed ring
    assert feat["properties"]["objectType"] == "annotation"
    assert feat["properties"]["classification"]["name"] == "immune infiltrate"
    assert feat["properties"]["measurements"]["spots"] == 16
    assert regions_geojson([], "x")["features"] == []


def test_no_region_reason_tells_isolated_spots_from_no_hit():
    import anndata as ad

    from spotwhisper.search.engine import SlideHits

    fused = np.array([0.1, 2.3, 0.4, -1.0])
    hits = SlideHits("S", ad.AnnData(np.zeros((4, 1), np.float32)), {}, {}, fused)
    isolated = hits.no_region_reason(1.5, "retina")
    assert isolated.startswith("no region of S matches 'retina'")
    assert "1 isolated spot(s) reach the threshold" in isolated and "best spot 2.30" in isolated
    none = hits.no_region_reason(3.0, "retina")
    assert "isolated" not in none and "best spot 2.30" in none and "(threshold 3)" in none
    hits.caveat = "no map for PDL1 on S: flat"
    assert hits.no_region_reason(3.0, "PD-L1 high") == "no map for PDL1 on S: flat"
