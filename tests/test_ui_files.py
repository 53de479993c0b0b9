"""UI files: exports round-trip (CSV, .h5ad, GeoJSON for QuPath); uploads are kept, checked and
processed (bare image → grid tiles; image + spot table → spot tiles); a huge image is shown
downsampled while its tiles come from full resolution."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spotwhisper import keys
from spotwhisper.io import read_h5ad
from spotwhisper.io.inputs import load_spot_table
from spotwhisper.names import unique_name
from spotwhisper.ui import handlers as h
from spotwhisper.ui.config import load_ui_config
from spotwhisper.ui.display import overlay, slide_picture, tile_gallery
from spotwhisper.ui.files import (
    check_image,
    export_result,
    keep_upload,
    prepare_upload,
    process_upload,
    session_folder,
)
from tests.conftest import synthetic_he


@pytest.fixture(scope="module")
def searched(mini_slide):
    from spotwhisper.search.engine import SearchEngine

    engine = SearchEngine(slides={"C2": mini_slide})
    cfg = load_ui_config()
    _, view = h.run_search(engine, h.new_view(engine, cfg), "immune infiltrate", cfg)
    return engine, view


def test_export_round_trip(searched, tmp_path):
    _, view = searched
    hits = view.hits()
    csv, h5ad, geo = export_result(view.shown, "C2", session_folder(tmp_path, "abc/../x y"))
    assert all(p.parent == tmp_path / "abc_x_y" / "exports" for p in (csv, h5ad, geo))
    assert not list(csv.parent.glob("*.part"))  # atomic writes leave no temp files
    table = pd.read_csv(csv)
    assert len(table) == hits.adata.n_obs and table["spot"].tolist() == list(hits.adata.obs_names)
    np.testing.assert_allclose(table["fused"], hits.fused, rtol=1e-6)
    region = np.zeros(hits.adata.n_obs, int)
    for r in hits.regions:
        region[r.spots] = r.id
    assert table["region"].tolist() == region.tolist()
    np.testing.assert_allclose(table["score_transcriptome"], hits.routes["transcriptome"], rtol=1e-6)

    a = read_h5ad(h5ad)
    np.testing.assert_allclose(a.obs[keys.SEARCH_FUSED], hits.fused)
    assert a.obs[keys.SEARCH_REGION].tolist() == region.tolist()
    assert a.uns[keys.SEARCH_INFO]["query"] == "immune infiltrate"
    assert a.uns[keys.SEARCH_INFO]["n_regions"] == len(hits.regions)
    np.testing.assert_array_equal(a.obsm[keys.SPATIAL], hits.adata.obsm[keys.SPATIAL])

    gj = json.loads(geo.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(hits.regions)
    f1 = gj["features"][0]
    assert f1["properties"]["objectType"] == "annotation"
    assert f1["properties"]["measurements"]["spots"] == hits.regions[0].n_spots
    geom = f1["geometry"]
    rings = [np.asarray(p[0]) for p in (geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]])]
    assert all(np.allclose(r[0], r[-1]) for r in rings)  # closed rings
    pts = np.vstack(rings)
    xy = hits.adata.obsm[keys.SPATIAL][hits.regions[0].spots]
    assert (pts.min(0) <= xy.min(0)).all() and (pts.max(0) >= xy.max(0)).all()  # the outlines enclose the spots
    np.testing.assert_allclose(pts, np.vstack([np.vstack([p, p[:1]]) for p in hits.regions[0].polygons]), atol=0.06)

def test_not_an_image_is_refused_and_kept(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("not a slide")
    folder = session_folder(tmp_path / "up", "s1")
    kept = keep_upload(src, folder)
    with pytest.raises(ValueError, match="notes.txt is not an image"):
        prepare_upload(kept, None, "notes", 0.5)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG but not really")
    kept_fake = keep_upload(fake, folder)
    with pytest.raises(ValueError, match="cannot be read as an image"):
        check_image(kept_fake)
    assert kept.read_text() == "not a slide" and kept_fake.exists()  # nothing the user sent is lost
    assert keep_upload(src, folder) != kept  # a second upload of the same name does not overwrite
    with pytest.raises(FileNotFoundError):
        keep_upload(tmp_path / "missing.png", folder)


def test_unique_name():
    assert unique_name("my slide.png", []) == "my_slide.png"
    assert unique_name("C2", ["C2", "C2-2"]) == "C2-3"
    assert unique_name("../..", []) == "upload"


def test_spot_table_adapter(tmp_path):
    img = synthetic_he((300, 400), seed=2)
    Image.fromarray(img).save(tmp_path / "he.png")
    pd.DataFrame({"Barcode": ["a", "b", "c"], "X": [100, 150, 200], "Y": [120, 120, 170]}).to_csv(tmp_path / "spots.csv", index=False)
    inp = load_spot_table(tmp_path / "spots.csv", tmp_path / "he.png", name="he", mpp=1.0)
    assert list(inp.adata.obs_names) == ["a", "b", "c"] and inp.slide.mpp == 1.0
    np.testing.assert_array_equal(inp.adata.obsm[keys.SPATIAL], [[100, 120], [150, 120], [200, 170]])
    sf = inp.adata.uns[keys.SPATIAL]["he"]["scalefactors"]
    assert sf[keys.SPOT_SPACING] == pytest.approx(50.0) and sf[keys.MPP] == 1.0
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bad.csv: a spot table needs columns x and y"):
        load_spot_table(tmp_path / "bad.csv", tmp_path / "he.png")
    pd.DataFrame({"x": [1, "q"], "y": [1, 2]}).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match="non-numeric"):
        load_spot_table(tmp_path / "nan.csv", tmp_path / "he.png")
    with pytest.raises(ValueError, match="must be a .csv"):
        prepare_upload(tmp_path / "he.png", tmp_path / "he.png", "he", 1.0)


def test_uploaded_image_is_processed_and_shown_downsampled(tmp_path, mini_slide):
    """A bare image → grid tiles through the real pipeline; display ≤ max side, tiles from full resolution."""
    from spotwhisper.pipeline import Models
    from spotwhisper.search.engine import SearchEngine

    img = synthetic_he((1000, 1200), seed=3)
    src = tmp_path / "upload.png"
    Image.fromarray(img).save(src)
    folder = session_folder(tmp_path / "up", "s2")
    kept = keep_upload(src, folder)
    inp = prepare_upload(kept, None, "upload", 0.5)  # 200 µm grid tiles = 400 px
    assert inp.adata is None and inp.slide.mpp == 0.5
    adata, saved = process_upload(inp, Models.load(), folder, progress=False)
    assert saved.exists() and read_h5ad(saved).n_obs == adata.n_obs >= 2
    engine = SearchEngine(slides={"upload": adata})
    cfg = load_ui_config(display_max_side=300)
    text, view = h.run_search(engine, h.new_view(engine, cfg), "tumour", cfg)
    assert "upload" in text and view.hits() is not None
    shown = overlay(view.hits(), view.threshold, cfg.display_max_side)
    assert max(shown.size) == 300 and max(slide_picture(adata, 300).size) == 300
    tile, _ = tile_gallery(view.hits(), 1, 400, 1.0)[0]
    x, y = (int(np.round(v)) for v in view.hits().top_spots(1)[["x", "y"]].iloc[0])
    np.testing.assert_array_equal(tile, img[y - 200 : y + 200, x - 200 : x + 200])  # exact full-resolution pixels

    # "also add it to the collection on disk": vectors and slide file join the served collection
    from spotwhisper.collection import index_slides
    from spotwhisper.index import CollectionIndex
    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui.files import add_to_collection

    index_slides([mini_slide], "served", index_dir=tmp_path / "idx")
    with pytest.raises(ValueError, match="not a collection on disk"):
        add_to_collection(engine, adata)
    served = open_engine("served", index_dir=tmp_path / "idx")
    assert "served" in add_to_collection(served, adata)
    coll = CollectionIndex.open("served", index_dir=tmp_path / "idx")
    assert coll.slides() == ["C2", "upload"] and (coll.folder / "slides" / "upload.h5ad").is_file()
    assert len(coll.vectors_for("transcriptome", "upload").metadata) == adata.n_obs
    again = open_engine("served", index_dir=tmp_path / "idx").search("tumour", slides=["upload"])
    assert again.slides[0].slide == "upload"


def test_upload_message_names_the_coarse_models():
    import anndata as ad

    coarse, default = ad.AnnData(np.zeros((2, 2))), ad.AnnData(np.zeros((2, 2)))
    coarse.uns["pipeline"] = {"image_models": "coarse"}
    default.uns["pipeline"] = {"image_models": "default"}
    from spotwhisper.ui.files import models_sentence

    assert "coarse image models" in models_sentence(coarse) and models_sentence(default) == ""
