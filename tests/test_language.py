"""Transcriptome–text stage: captions, model persistence, training, zero-shot scoring, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from spotwhisper import keys
from spotwhisper.genes import PanelMismatchError, load_panel, log1p_normalize
from spotwhisper.language.captions import (
    CELL_TYPE_WORDS,
    caption_spots,
    clean_annotation,
    deconvolution_caption,
    parse_evidence,
)
from spotwhisper.language.config import CaptionConfig, ModelConfig, TextConfig
from spotwhisper.language.evaluate import auroc_table, recall_at_k, weighted_overall
from spotwhisper.language.model import TextExpressionModel, clip_loss

warnings.filterwarnings("ignore", message="Some cells have zero counts")


_ENCODER = None


def text_encoder():
    """The bundled MiniLM text tower, loaded once for the module."""
    global _ENCODER
    if _ENCODER is None:
        from spotwhisper.language.text_encoder import TextEncoder

        _ENCODER = TextEncoder()
    return _ENCODER


@pytest.fixture(scope="module")
def c1(data_dir):
    from spotwhisper.io import read_her2st

    return log1p_normalize(read_her2st(data_dir, "C1", with_image=False))


@pytest.fixture(scope="module")
def g2(data_dir):
    from spotwhisper.io import read_her2st

    return log1p_normalize(read_her2st(data_dir, "G2", with_image=False))


@pytest.fixture(scope="module")
def c1_captions(c1, data_dir):
    from spotwhisper.io import tls_signature
    from spotwhisper.prompts import load_vocabulary

    return caption_spots(
        c1, CaptionConfig(), load_panel(), tls_weights=tls_signature(data_dir), vocabulary=load_vocabulary()
    )


# -- captions -------------------------------------------------------------------------------------


def test_label_caption_and_leak_guard(c1, c1_captions):
    labels = c1.obs[keys.LABEL].astype(str).to_numpy()
    i = int(np.flatnonzero(labels == "invasive cancer")[0])
    texts = [c.text for c in c1_captions[i] if c.kind == "label"]
    assert "invasive cancer" in texts and all("invasive cancer" in t for t in texts)
    held_out = caption_spots(c1, CaptionConfig(), load_panel(), with_labels=False)
    assert not any(c.kind == "label" for caps in held_out for c in caps)
    assert not any("undetermined" in c.text for caps in c1_captions for c in caps)


def test_deconvolution_words_match_dominant_type(c1, c1_captions):
    cols = [c for c in c1.obs if c.startswith(keys.DECONV_PREFIX)]
    props = c1.obs[cols].to_numpy()
    checked = 0
    for i, caps in enumerate(c1_captions):
        text = next((c.text for c in caps if c.kind == "deconv"), None)
        top = int(np.argmax(props[i]))
        if props[i, top] >= CaptionConfig().dominant:
            word = CELL_TYPE_WORDS[cols[top][len(keys.DECONV_PREFIX) :]]
            assert text is not None and text.startswith(f"dominated by {word}")
            checked += 1
    assert checked > 10


def test_overexpressed_genes_are_above_section_mean(c1, c1_captions):
    x = c1.layers["log1p"]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    mean = x.mean(axis=0)
    index = {g: i for i, g in enumerate(c1.var_names)}
    n = 0
    for i, caps in enumerate(c1_captions):
        for c in caps:
            if c.kind == "genes":
                names = c.text.removeprefix("high expression of ").replace(" and ", ", ").split(", ")
                for g in names:
                    assert x[i, index[g]] > mean[index[g]], (g, c.text)
                    n += 1
    assert n > 100


def test_cluster_evidence_parsing():
    genes, pathways = parse_evidence(
        "Marker genes include : FABP4, ADH1B, ADIPOQ and PLIN1; enriched for pathways related to lipid "
        "metabolism, fatty acid metabolic processes, lipid transport",
        max_pathways=2,
    )
    assert genes == ["FABP4", "ADH1B", "ADIPOQ", "PLIN1"]
    assert pathways == ["lipid metabolism", "fatty acid metabolic processes"]
    assert clean_annotation("cancer 1") == "cancer"
    assert clean_annotation("immune : B/plasma cells") == "immune: B/plasma cells"
    mix = deconvolution_caption(pd.Series({"T-cells": 0.3, "B-cells": 0.3, "CAFs": 0.05}), CaptionConfig())
    assert mix == "a mix of T cells and B cells"


# -- model ----------------------------------------------------------------------------------------


def _small_model(n_genes: int = 50) -> TextExpressionModel:
    cfg = ModelConfig(embed_dim=16)
    cfg.expression.hidden = [32]
    return TextExpressionModel([f"G{i}" for i in range(n_genes)], cfg, text_dim=384)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _small_model()
    x = np.random.default_rng(0).normal(size=(7, 50)).astype(np.float32)
    t = torch.randn(5, 384)
    before = model.encode_expression(x), model.project_text(t).detach().numpy()
    model.save_pretrained(tmp_path / "m", extra={"note": "test"})
    loaded = TextExpressionModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(before[0], loaded.encode_expression(x))
    np.testing.assert_array_equal(before[1], loaded.project_text(t).detach().numpy())
    assert loaded.genes == model.genes and loaded.meta["note"] == "test"
    assert loaded.fingerprint() == model.fingerprint()
    assert not (tmp_path / "m.part").exists()


def test_logit_scale_clamped():
    model = _small_model()
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale == pytest.approx(100.0, rel=1e-5)  # read clamped
    model.clamp_logit_scale()
    assert float(model.log_logit_scale.detach()) == pytest.approx(np.log(100.0), rel=1e-6)
    logits = model(torch.ones(2, 50), torch.ones(2, 384))
    assert float(logits.abs().max()) <= 100.0 + 1e-4


def test_clip_loss_with_shared_captions_equals_multi_positive_form():
    """Spots 0 and 1 share a caption (tied columns): plain CLIP equals spreading the target over both."""
    logits = torch.tensor([[3.0, 3.0, -1.0], [2.0, 2.0, 0.5], [-1.0, -1.0, 4.0]])
    same = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    multi = 0.5 * (
        -(same * torch.log_softmax(logits, 1)).sum(1).mean() - (same * torch.log_softmax(logits.T, 1)).sum(1).mean()
    )
    assert float(clip_loss(logits)) == pytest.approx(float(multi), rel=1e-6)
    assert float(clip_loss(torch.eye(3) * 20)) < 1e-6


def test_transformer_encoder_shapes():
    cfg = ModelConfig(embed_dim=8)
    cfg.expression.kind = "transformer"
    cfg.expression.n_tokens, cfg.expression.d_model = 4, 16
    model = TextExpressionModel([f"G{i}" for i in range(30)], cfg, text_dim=384)
    emb = model.encode_expression(np.zeros((3, 30), np.float32))
    assert emb.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


# -- evaluation helpers ---------------------------------------------------------------------------


def test_auroc_and_recall_helpers():
    labels = np.array(["a", "a", "b", "b", "c"])
    scores = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.9, 0], [0.2, 0.7, 0], [0.5, 0.5, 1]])
    t = auroc_table(scores, labels, ["a", "b", "c"])
    assert t["auroc"].tolist() == [1.0, 1.0, 1.0]
    assert weighted_overall(pd.DataFrame({"auroc": [1.0, 0.5], "n_pos": [3, 1]})) == pytest.approx(0.875)
    spot = np.eye(4, dtype=np.float32)
    r = recall_at_k(spot, spot, [np.array([i]) for i in range(4)], ks=[1])
    assert r["text_to_spot@1"] == 1.0 and r["spot_to_text@1"] == 1.0
    assert r["spot_to_text@1_chance"] == pytest.approx(0.25)


# -- training on real data ------------------------------------------------------------------------


def test_tiny_training_loss_falls(c1, g2, data_dir):
    import anndata as ad

    from spotwhisper.language.data import build_captioned_spots
    from spotwhisper.language.train import train_model

    adata = ad.concat([c1, g2], join="inner", merge="first")
    genes = load_panel()
    cfg = TextConfig()
    cfg.captions.genes = cfg.captions.markers = cfg.captions.tls = False
    cfg.model.embed_dim = 32
    cfg.model.expression.hidden = [64]
    cfg.train.epochs = 8
    cfg.train.batch_size = 64
    caps = caption_spots(adata, cfg.captions, genes)
    data = build_captioned_spots(adata, caps, genes, cfg.model.input)
    assert {"label", "cluster", "deconv"} <= set(data.kinds)
    data.text_emb = text_encoder().encode(data.texts)  # real MiniLM embeddings of the few unique captions
    torch.set_num_threads(1)
    _, history = train_model(data, cfg, genes, text_dim=data.text_emb.shape[1], progress=False)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]


def test_held_out_concept_model_never_reads_a_caption_naming_its_class(c1, g2, data_dir, tmp_path):
    """A model trained without the 'immune' concept: none of its training captions names the class or a
    synonym (label, cluster, deconvolution and marker captions alike) and the rest is kept."""
    import anndata as ad

    from spotwhisper.bench.tasks import load_concepts
    from spotwhisper.language.heldout import captions_naming
    from spotwhisper.language.train import fit_and_evaluate
    from spotwhisper.prompts import load_vocabulary

    concept = load_concepts()["immune"]
    adata = ad.concat([c1, g2], join="inner", merge="first")
    cfg = TextConfig(cache_dir=str(tmp_path / "text-cache"))
    cfg.captions.genes = cfg.captions.tls = False
    cfg.model.embed_dim, cfg.model.expression.hidden = 32, [64]
    cfg.train.epochs, cfg.train.batch_size = 2, 64
    genes = load_panel()
    full = caption_spots(adata, cfg.captions, genes, vocabulary=load_vocabulary())
    seen = {c.text for caps in full for c in caps}
    naming = captions_naming(seen, concept)
    assert any("immune infiltrate" == t for t in naming) and any(t.startswith("immune:") for t in naming)
    torch.set_num_threads(1)
    fold = fit_and_evaluate(adata, cfg, [], text_encoder(), genes=genes, concept=concept, captions=full, evaluate=False)
    assert fold.train_texts and captions_naming(fold.train_texts, concept) == []
    assert fold.removed_captions == sum(1 for caps in full for c in caps if concept.named_in(c.text))
    assert set(fold.train_texts) == seen - set(naming)  # only the captions naming the concept went
    for name in ["immune infiltrate", "immune cells", "lymphocytes", "tumour-infiltrating lymphocytes", "leukocytes"]:
        assert concept.named_in(name)
    assert not concept.named_in("plasma cells") and not concept.named_in("adipose tissue")


def test_input_standardisation_per_group_and_for_one_slide_in_place():
    """Per-gene z-scores within each group, clipped; one group (a slide) is computed in place, same values."""
    from spotwhisper.language.config import InputConfig
    from spotwhisper.language.expression_encoder import standardize

    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, size=(200, 5)).astype(np.float32)
    x[:, 4] = 2.0  # a constant gene
    x[3, 0] = 500.0  # an outlier beyond the clip
    cfg = InputConfig(standardize="zscore")

    def reference(block):
        z = (block - block.mean(0)) / np.maximum(block.std(0), cfg.min_std)
        return np.clip(z, -cfg.clip, cfg.clip)

    one = standardize(x.copy(), None, cfg)
    assert one.dtype == np.float32 and np.allclose(one, reference(x), atol=1e-6)
    assert one[3, 0] == cfg.clip and np.all(one[:, 4] == 0)
    groups = np.repeat(["a", "b"], 100)
    two = standardize(x, groups, cfg)
    assert np.allclose(two[:100], reference(x[:100]), atol=1e-6) and np.allclose(two[100:], reference(x[100:]), atol=1e-6)
    assert not np.allclose(two, one)  # the groups are standardised apart
