"""The pipeline reads a slide with the image models that hold at its resolution: the default (CNN)
models up to ``coarse_above_mpp`` µm/px, the coarse (stain statistics) models beyond, as a Space
Ranger ``tissue_hires_image.png`` (~3.5 µm/px) needs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from spotwhisper.config import load_config
from spotwhisper.pipeline import Models, PipelineConfig


def _models(coarse: bool = True, limit: float | None = 2.0) -> Models:
    default = SimpleNamespace(encoder="efficientnet_lite0")
    return Models(expression=default, text=None, aligned="default-head",  # type: ignore[arg-type]
                  coarse_expression=SimpleNamespace(encoder="stain_stats") if coarse else None,  # type: ignore[arg-type]
                  coarse_aligned="coarse-head" if coarse else None, coarse_above_mpp=limit)  # type: ignore[arg-type]


def test_resolution_picks_the_model_pair(caplog):
    m = _models()
    assert m.for_slide(0.73, "B4")[2] == "default"  # her2st as scanned
    assert m.for_slide(2.0, "B4")[2] == "default"  # the limit itself still holds
    assert m.for_slide(None, "B4")[2] == "default"  # unknown µm/px: nothing to route on
    with caplog.at_level(logging.INFO, logger="spotwhisper.pipeline"):
        expression, aligned, which = m.for_slide(3.44, "hires")
    assert (expression.encoder, aligned, which) == ("stain_stats", "coarse-head", "coarse")
    assert "hires: 3.44 µm/px is coarser than 2.0 µm/px" in caplog.text


def test_without_a_coarse_model_a_coarse_slide_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="spotwhisper.pipeline"):
        assert _models(coarse=False).for_slide(3.5, "hires")[2] == "default"
    assert "beyond what the default image models were measured to hold" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spotwhisper.pipeline"):
        assert _models(limit=None).for_slide(3.5, "hires")[2] == "default"  # routing off: no warning
    assert not caplog.text


def test_shipped_config_routes_and_both_pairs_load():
    cfg = load_config(PipelineConfig, "pipeline")
    assert cfg.coarse_above_mpp == pytest.approx(2.0)
    models = Models.load(cfg)
    assert models.expression.encoder == "efficientnet_lite0"
    assert models.coarse_expression is not None and models.coarse_expression.encoder == "stain_stats"
    assert models.coarse_aligned is not None and models.coarse_aligned.encoder == "stain_stats"
    assert models.coarse_expression.genes == models.expression.genes  # one panel whatever the resolution


@pytest.mark.slow
def test_a_coarse_copy_of_a_real_section_is_read_by_the_coarse_models(mini_raw, tmp_path):
    """C2's window resampled to 3.5 µm/px (what a Space Ranger hires image gives): the coarse pair reads
    it and the manifest says so; the same window as scanned is read by the default pair."""
    from spotwhisper.io.inputs import SlideInput
    from spotwhisper.io.spatial import open_source_slide
    from spotwhisper.pipeline import process_slide
    from spotwhisper.tiles.views import view_of

    sub = mini_raw.copy()
    slide, scale = open_source_slide(sub)
    view, vscale = view_of(slide, scale, mpp=3.5)
    out = process_slide(SlideInput("C2-hires", view, sub, vscale), Models.load(), progress=False)
    assert out.uns["pipeline"]["image_models"] == "coarse" and out.uns["pipeline"]["expression"].startswith("stain_stats")
    assert out.n_obs == sub.n_obs and "text_emb" in out.obsm and "image_text_emb_aligned" in out.obsm
    native = process_slide(SlideInput("C2", slide, sub, scale), Models.load(), progress=False)
    assert native.uns["pipeline"]["image_models"] == "default"
    # one collection holds slides read by either pair: every route lives in the same text space
    from spotwhisper.collection import index_slides, open_collection
    from spotwhisper.search.engine import SearchEngine

    from spotwhisper import keys

    out.obs[keys.SECTION] = "C2-hires"  # the same spots, another slide
    index_slides([native, out], "mixed", index_dir=tmp_path / "indexes")
    engine = SearchEngine.from_collection(open_collection("mixed", index_dir=tmp_path / "indexes"))
    res = engine.search("invasive cancer", explain=False)
    assert {s.slide for s in res.slides} == {"C2", "C2-hires"}


def test_predict_expression_alone_routes_too(mini_raw):
    """``predict expression`` / ``predict proteins`` load only the expression model, by the same rule."""
    from spotwhisper.io.inputs import SlideInput
    from spotwhisper.io.spatial import open_source_slide
    from spotwhisper.pipeline import expression_model_for
    from spotwhisper.tiles.views import view_of

    slide, scale = open_source_slide(mini_raw)
    assert expression_model_for(SlideInput("C2", slide, mini_raw, scale)).encoder == "efficientnet_lite0"
    view, vscale = view_of(slide, scale, mpp=3.5)
    assert expression_model_for(SlideInput("C2-hires", view, mini_raw, vscale)).encoder == "stain_stats"
