"""Zero-shot scoring and tile embedding of the image–text route, on a tiny random PLIP.

The right answers are built in: tile embeddings are set equal to the (independently computed)
prompt-ensembled embedding of a known query, so argmax, probabilities and cosines are known.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from spotwhisper import keys
from spotwhisper.config import load_config
from spotwhisper.encoders.clip_models import load_plip
from spotwhisper.imagetext import (
    ImageTextConfig,
    PlipSettings,
    TextEmbeddingCache,
    embed_queries_for_tiles,
    embed_tiles,
    load_model,
    score_tiles,
)
from spotwhisper.prompts import load_vocabulary

from .test_clip_models import LONG_TEXT, build_tiny_plip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_plip(str(build_tiny_plip(tmp_path_factory.mktemp("plip"))))


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


def _ensembled(model, names, templates):
    """Expected class embedding, computed without the module under test."""
    prompts = [t.format(n) for n in names for t in templates]
    emb = model.encode_text(prompts).numpy()
    mean = emb.mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_known_answer(model, vocab):
    templates = vocab.templates_for("image")
    a = _ensembled(model, vocab.terms["invasive cancer"].names, templates)
    b = _ensembled(model, vocab.terms["adipose tissue"].names, templates)
    tiles = np.vstack([np.tile(a, (5, 1)), np.tile(b, (5, 1))]).astype(np.float32)
    res = score_tiles(model, tiles, ["invasive cancer", "adipose tissue"], vocabulary=vocab, cache=TextEmbeddingCache())
    assert res.similarity.shape == res.logits.shape == res.probabilities.shape == res.zscores.shape == (10, 2)
    assert np.allclose(res.text_embeddings, np.stack([a, b]), atol=1e-5)
    assert list(res.best()) == [0] * 5 + [1] * 5
    assert np.allclose(res.similarity[:5, 0], 1, atol=1e-5) and np.allclose(res.similarity[5:, 1], 1, atol=1e-5)
    assert np.allclose(res.logits, res.similarity * model.logit_scale, atol=1e-4)
    assert np.allclose(res.probabilities.sum(axis=1), 1, atol=1e-5)
    assert (res.probabilities[:5, 0] > 0.5).all() and (res.probabilities[5:, 1] > 0.5).all()
    margin = model.logit_scale * (1 - float(a @ b))
    assert np.allclose(res.probabilities[0, 0], 1 / (1 + np.exp(-margin)), atol=1e-4)  # two-way softmax
    assert np.allclose(res.zscores.mean(axis=0), 0, atol=1e-5) and np.allclose(res.zscores.std(axis=0), 1, atol=1e-4)
    # a synonym names the same vocabulary term, so the same ensemble
    assert np.allclose(embed_queries_for_tiles(model, ["fat"], vocabulary=vocab)[0], b, atol=1e-5)


def test_free_text_query_and_background(model, vocab):
    text = "mitotic figures in a solid sheet"
    expect = _ensembled(model, [text], vocab.templates_for("image"))
    tiles = np.tile(expect, (4, 1)).astype(np.float32)
    res = score_tiles(model, tiles, text, vocabulary=vocab, background=["adipose tissue", text.upper()])
    assert np.allclose(res.text_embeddings[0], expect, atol=1e-5)
    assert res.background == ["adipose tissue"]  # the query itself is not its own competitor
    assert res.probabilities.shape == (4, 1) and ((res.probabilities > 0.5) & (res.probabilities < 1)).all()
    single = score_tiles(model, tiles, [text], vocabulary=vocab, templates=["{}"])
    assert np.allclose(single.probabilities, 1) and np.allclose(
        single.text_embeddings[0], model.encode_text([text])[0], atol=1e-5
    )


def test_text_cache(model, vocab, monkeypatch):
    calls = []
    original = model.encode_text

    def spy(texts):
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(model, "encode_text", spy)
    cache = TextEmbeddingCache(maxsize=1000)
    tiles = np.random.default_rng(0).normal(size=(6, model.embed_dim)).astype(np.float32)
    first = score_tiles(model, tiles, ["invasive cancer", "stroma"], vocabulary=vocab, cache=cache)
    n_prompts = sum(len(c) for c in calls)
    assert calls and len(cache) == n_prompts and cache.misses == n_prompts
    second = score_tiles(model, tiles, ["invasive cancer", "stroma"], vocabulary=vocab, cache=cache)
    assert sum(len(c) for c in calls) == n_prompts  # nothing re-encoded
    assert cache.hits == n_prompts and np.array_equal(first.similarity, second.similarity)
    small = TextEmbeddingCache(maxsize=2)
    small.encode(model, ["a", "b"])
    small.encode(model, ["a", "c"])  # "a" refreshed, so "b" is the least recently used
    assert {k[2] for k in small._store} == {"a", "c"}


def test_bad_input(model, vocab, caplog):
    tiles = np.zeros((2, model.embed_dim), np.float32)
    for bad in ("", "   ", [], ["ok", ""]):
        with pytest.raises(ValueError, match="query|no query"):
            score_tiles(model, tiles, bad, vocabulary=vocab)
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        score_tiles(model, np.zeros((2, 7)), "stroma", vocabulary=vocab)
    with caplog.at_level(logging.WARNING):
        res = score_tiles(model, tiles + 0.1, LONG_TEXT, vocabulary=vocab, cache=TextEmbeddingCache())
    assert "truncated" in caplog.text and np.isfinite(res.similarity).all()


def test_config_builds_model(tmp_path):
    cfg = load_config(ImageTextConfig, "imagetext")
    assert cfg.model == "plip" and cfg.plip.source == "vinid/plip" and cfg.conch.checkpoint is None
    assert cfg.templates_route == "image"
    folder = build_tiny_plip(tmp_path / "plip")
    m = load_model(ImageTextConfig(plip=PlipSettings(source=str(folder))))
    assert m.name == "plip" and m.embed_dim == 16
    with pytest.raises(ValueError, match="MahmoodLab/CONCH"):
        load_model(cfg, "conch")


def test_embed_tiles_on_c2(c2, model, vocab):
    adata = c2.copy()
    idx = np.arange(6)
    out = embed_tiles(model, adata, indices=idx, batch_size=4, progress=False)
    key = keys.IMAGE_TEXT_EMB_PREFIX + "plip"
    assert adata.obsm[key] is out and out.shape == (adata.n_obs, model.embed_dim)
    assert np.allclose(np.linalg.norm(out[idx], axis=1), 1, atol=1e-5)
    assert np.isnan(out[6:]).all()
    assert not np.allclose(out[0], out[1])
    info = adata.uns[keys.IMAGE_TEXT_INFO]["plip"]
    assert info["n_embedded"] == 6 and info["image_size_px"] == 32
    assert 150 < info["tile_um"] < 250  # her2st ST spots are 200 µm apart
    # the stored row is the model's embedding of that spot's tile
    from spotwhisper.io import open_source_slide
    from spotwhisper.tiles import read_tile, spot_layout

    slide, scale = open_source_slide(adata)
    tile, _ = read_tile(slide, spot_layout(adata, slide, scale), 3, model.image_size, with_subtiles=False)
    assert np.allclose(model.embed_images(tile[None])[0], out[3], atol=1e-5)
    res = score_tiles(model, out, ["invasive cancer", "adipose tissue"], vocabulary=vocab)
    assert list(res.best()[6:10]) == [-1] * 4 and (res.best()[:6] >= 0).all()
