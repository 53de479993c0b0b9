"""Search by example on real sections: a known region finds itself and its neighbours first, another
patient's section is ranked on the same scale, and examples come from spots, boxes and GeoJSON."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spotwhisper import keys


@pytest.fixture(scope="module")
def b4_strip(data_dir):
    """Two rows of section B4 (patient B) through the whole pipeline: another patient's slide."""
    from spotwhisper.io import read_her2st
    from spotwhisper.io.inputs import SlideInput
    from spotwhisper.io.spatial import open_source_slide
    from spotwhisper.pipeline import Models, process_slide

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b4 = read_her2st(data_dir, "B4")
    sub = b4[b4.obs[keys.ARRAY_Y].isin([18, 19])].copy()
    slide, scale = open_source_slide(sub)
    return process_slide(SlideInput("B4", slide, sub, scale), Models.load(), progress=False)


@pytest.fixture(scope="module")
def engine(mini_slide, b4_strip):
    from spotwhisper.search.engine import SearchEngine

    return SearchEngine({"C2": mini_slide, "B4": b4_strip})


def _patch(adata, centre: int, k: int = 4) -> np.ndarray:
    """Spot ``centre`` and its ``k − 1`` nearest spots (a small region)."""
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    return np.argsort(np.linalg.norm(xy - xy[centre], axis=1))[:k]


def test_a_region_finds_itself_and_its_neighbours_first(engine, mini_slide):
    from spotwhisper.search.example import Example

    example = _patch(mini_slide, 40)
    result = engine.search_like(Example("C2", example, "C2 patch"), slides=["C2"])
    hits = result.slides[0]
    assert set(hits.routes) == {"image_vec", "transcriptome", "image"}
    top = np.argsort(-hits.fused)[: len(example)]
    assert len(set(top) & set(example)) >= len(example) - 1  # the example is (almost) its own best match
    for route, rel in hits.calibrated.items():  # its spots are at least as alike as they are to each other
        assert np.median(rel[example]) >= result.threshold, route
    region = next(r for r in hits.regions if set(r.spots) & set(example))
    assert set(example) <= set(region.spots) or len(set(example) & set(region.spots)) >= len(example) - 1
    xy = np.asarray(mini_slide.obsm[keys.SPATIAL], dtype=float)
    dist = np.linalg.norm(xy - xy[example].mean(0), axis=1)
    rest = np.setdiff1d(np.arange(mini_slide.n_obs), example)
    near, far = rest[dist[rest] <= np.percentile(dist[rest], 25)], rest[dist[rest] >= np.percentile(dist[rest], 75)]
    assert np.nanmean(hits.fused[near]) > np.nanmean(hits.fused[far])  # neighbours before far-away tissue
    assert hits.explanation is not None and hits.attributions is not None  # explained like a text hit
    assert "Search by example" in result.summary() and result.unit.startswith("relevance")


def test_another_patients_section_is_ranked_on_the_same_scale(engine, mini_slide, b4_strip):
    from spotwhisper.search.example import Example

    example = Example("C2", _patch(mini_slide, 40))
    both = engine.search_like(example)
    bests = [h.best for h in both.slides]
    assert {h.slide for h in both.slides} == {"C2", "B4"} and bests == sorted(bests, reverse=True)
    b4 = next(h for h in both.slides if h.slide == "B4")
    assert np.isfinite(b4.fused).all() and set(b4.calibrated) == {"image_vec", "transcriptome", "image"}
    alone = engine.search_like(example, slides=["B4"]).slides[0]  # calibrated on the example's slide, not B4
    np.testing.assert_allclose(alone.fused, b4.fused)


def test_image_vectors_of_another_encoder_are_not_compared(engine, mini_slide, b4_strip):
    from spotwhisper.search.engine import SearchEngine
    from spotwhisper.search.example import Example

    other = b4_strip.copy()
    other.uns[keys.IMAGE_VEC] = {**other.uns[keys.IMAGE_VEC], "encoder": "stain_stats"}
    eng = SearchEngine({"C2": mini_slide, "B4": other}, text_model=engine.text)
    result = eng.search_like(Example("C2", [40, 41]))
    b4 = next(h for h in result.slides if h.slide == "B4")
    assert "image_vec" not in b4.calibrated and "transcriptome" in b4.calibrated
    assert any("not comparable" in n for n in result.notes)


def test_faiss_lists_the_nearest_spots(mini_collection, mini_slide):
    from spotwhisper.search.engine import open_engine
    from spotwhisper.search.example import Example, ExampleQuery, prototypes
    from spotwhisper.search.scoring import EXAMPLE_ROUTES

    engine = open_engine(mini_collection[1], mini_collection[0])
    assert "image_vec" in engine.index.routes()
    example = Example("C2", _patch(mini_slide, 40, 3))
    protos = prototypes(engine.slide("C2"), example, EXAMPLE_ROUTES, engine.cfg.like.weights, engine.cfg)
    route, table = engine.nearest_spots(ExampleQuery(example, protos), k=5)
    assert route == "image_vec" and list(table["rank"]) == list(range(5))
    assert table["score"].is_monotonic_decreasing
    assert len(set(table["spot"].head(3)) & set(mini_slide.obs_names[example.spots])) >= 2


def test_examples_from_names_boxes_and_geojson(mini_slide, tmp_path):
    from spotwhisper.search.example import example_spots, parse_like, spots_in_geojson
    from spotwhisper.search.export import regions_geojson, write_geojson
    from spotwhisper.search.regions import find_regions

    names = list(mini_slide.obs_names[:3])
    idx, label = example_spots(mini_slide, names, "C2")
    assert list(idx) == [0, 1, 2] and label == "C2 selection"
    short = [n.removeprefix("C2_") for n in names]
    assert list(example_spots(mini_slide, short, "C2")[0]) == [0, 1, 2]
    xy = np.asarray(mini_slide.obsm[keys.SPATIAL])
    box = (*(xy[5] - 1), *(xy[5] + 1))
    assert list(example_spots(mini_slide, {"box": box}, "C2")[0]) == [5]
    assert parse_like("C2:10x21,10x22") == ("C2", ["10x21", "10x22"])
    assert parse_like("C2:1,2,3,4") == ("C2", [1.0, 2.0, 3.0, 4.0])
    for bad in ("C2", "C2:", ":1,2", "C2:1,2,3"):
        with pytest.raises(ValueError, match="--like"):
            parse_like(bad)
    # a region exported as GeoJSON (what `search` writes; QuPath reads it) gives back its spots
    scores = np.full(mini_slide.n_obs, -5.0)
    scores[_patch(mini_slide, 40, 5)] = 1.0
    region = find_regions(xy, scores, 0.0, 270.0, 270.0, 0.7)[0]
    path = write_geojson([region], "patch", tmp_path / "r.geojson", slide="C2")
    found, label = example_spots(mini_slide, path, "C2")
    assert set(found) == set(region.spots) and label == "C2 annotation r.geojson"
    qupath = regions_geojson([region], "patch")["features"]  # a QuPath export: a bare list of features
    assert set(spots_in_geojson(mini_slide, {"type": "FeatureCollection", "features": qupath})) == set(region.spots)
    with pytest.raises(ValueError, match="holds no polygon"):
        spots_in_geojson(mini_slide, {"type": "FeatureCollection", "features": []})
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(ValueError, match="bad.geojson: not a readable GeoJSON"):
        example_spots(mini_slide, tmp_path / "bad.geojson", "C2")
    with pytest.raises(KeyError, match="no spot"):
        example_spots(mini_slide, ["nope"], "C2")
    with pytest.raises(ValueError, match="at least one spot"):
        from spotwhisper.search.example import Example

        Example("C2", [])
