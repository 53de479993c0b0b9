"""Zero-shot scoring with the shipped default model, text encoders, and bad input."""

from __future__ import annotations

import shutil
import warnings

import anndata as ad
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spotwhisper import keys
from spotwhisper.genes import PanelMismatchError, log1p_normalize
from spotwhisper.language.config import ModelConfig, TextEncoderConfig
from spotwhisper.language.model import DEFAULT_MODEL_DIR, TextExpressionModel
from spotwhisper.language.text_encoder import TextEncoder, UnreadableQueryWarning, minilm_path
from spotwhisper.language.transcriptome_zeroshot import default_model, embed, embed_queries_for_spots, score

warnings.filterwarnings("ignore", message="Some cells have zero counts")


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def c1(data_dir):
    from spotwhisper.io import read_her2st

    return log1p_normalize(read_her2st(data_dir, "C1", with_image=False))


def test_default_model_never_saw_patient_c(model):
    assert "C" in model.meta["test_patients"] and "C" not in model.meta["train_patients"]
    assert (DEFAULT_MODEL_DIR / "model_card.md").exists()


def test_zero_shot_beats_chance_on_held_out_patient(model, c1):
    """Patient C is held out of the shipped model. C1's pathologist labels are invasive cancer (127
    spots) and connective tissue (37; adipose has 3, too few): both must be found well above chance."""
    classes = ["invasive cancer", "cancer in situ", "immune infiltrate", "breast glands", "connective tissue", "adipose tissue"]
    res = score(c1, classes, model)
    labels = c1.obs[keys.LABEL].astype(str).to_numpy()
    keep = np.isin(labels, ["invasive cancer", "connective tissue"])
    for cls in ("invasive cancer", "connective tissue"):
        auc = roc_auc_score(labels[keep] == cls, res.probabilities[keep, classes.index(cls)])
        assert auc > 0.65, (cls, auc)  # shipped model: 0.68 / 0.75
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert res.similarity.shape == (c1.n_obs, len(classes))
    assert np.all(np.abs(res.similarity) <= 1.0 + 1e-5)


def test_embed_stores_and_reuses_spot_embeddings(model, c1):
    adata = c1.copy()
    embed(adata, model)
    assert adata.obsm[keys.TEXT_EMB].shape == (adata.n_obs, model.config.embed_dim)
    adata.obsm[keys.TEXT_EMB] = adata.obsm[keys.TEXT_EMB][:, ::-1].copy()  # tampered: must be reused as stored
    a = score(adata, ["adipose tissue", "invasive cancer"], model).similarity
    b = score(c1, ["adipose tissue", "invasive cancer"], model).similarity
    assert not np.allclose(a, b)
    adata.obsm[keys.TEXT_EMB] = adata.obsm[keys.TEXT_EMB][:, ::-1].copy()
    np.testing.assert_allclose(score(adata, ["adipose tissue", "invasive cancer"], model).similarity, b, atol=1e-5)


def test_inferred_log1p_input_without_counts(model, c1):
    """Inferred expression arrives as log1p values (no counts): X non-integer, genes in any order."""
    genes = [g for g in model.genes if g in set(c1.var_names)][::-1]  # C1 lacks a few panel genes
    x = c1[:, genes].layers["log1p"]
    inferred = ad.AnnData(X=np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32))
    inferred.var_names = genes
    inferred.obs[keys.SECTION] = "C1"
    np.testing.assert_allclose(model.encode_expression(inferred), model.encode_expression(c1), atol=1e-5)


def test_query_cache_avoids_re_encoding(model):
    model.__dict__.pop("_query_cache", None)
    embed_queries_for_spots(model, ["breast glands", "a completely new query about fibrous stroma"])
    n = model.text_encoder.n_encoded
    again = embed_queries_for_spots(model, ["a completely new query about fibrous stroma", "breast glands"])
    assert model.text_encoder.n_encoded == n
    assert again.shape == (2, model.config.embed_dim)


def test_prompt_ensembling_uses_synonyms(model):
    ens = embed_queries_for_spots(model, ["adipose tissue"], ensemble=True)
    plain = embed_queries_for_spots(model, ["adipose tissue"], ensemble=False)
    assert not np.allclose(ens, plain)
    np.testing.assert_allclose(np.linalg.norm(ens), 1.0, rtol=1e-5)


def test_bad_queries(model, c1):
    with pytest.raises(ValueError, match="empty query"):
        score(c1, ["adipose tissue", "   "], model)
    with pytest.raises(ValueError, match="no queries"):
        score(c1, [], model)
    for query in ("脂肪組織と浸潤癌", "xqzt vbnmk plorw"):
        with pytest.warns(UnreadableQueryWarning):
            res = score(c1, ["adipose tissue", query], model)
        assert np.isfinite(res.similarity).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableQueryWarning)
        score(c1, ["adipose tissue", "ERBB2 high tumour cells", "tertiary lymphoid structures"], model)


def test_panel_mismatch_is_refused(model, c1):
    other = c1[:, [g for g in c1.var_names if g not in set(model.genes[:1000])]].copy()
    with pytest.raises(PanelMismatchError, match="panel genes"):
        score(other, ["adipose tissue", "invasive cancer"], model)
    with pytest.raises(ValueError, match="panel order"):
        model.encode_expression(np.zeros((3, 10), np.float32))


def test_text_encoder_from_local_folder_tiny_bert(tmp_path):
    """Other encoders (BiomedBERT, BioBERT) load through transformers from a folder: a tiny random BERT."""
    from transformers import BertConfig, BertModel

    src = minilm_path()
    folder = tmp_path / "tiny-bert"
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(cfg).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    for pooling in ("mean", "cls"):
        enc = TextEncoder(TextEncoderConfig(name=str(folder), pooling=pooling))
        emb = enc.encode(["invasive carcinoma", "adipose tissue", "invasive carcinoma"])
        assert emb.shape == (3, 32)
        np.testing.assert_array_equal(emb[0], emb[2])
    dual = TextExpressionModel(["A", "B"], ModelConfig(embed_dim=8, text=TextEncoderConfig(name=str(folder))), text_dim=32)
    assert dual.encode_text(["fat"]).shape == (1, 8)
    with pytest.raises(FileNotFoundError, match="cannot load"):
        TextEncoder(TextEncoderConfig(name=str(tmp_path / "missing")))


def test_cli_predict_text(tmp_path, data_dir):
    import pandas as pd

    from spotwhisper.cli import main

    out = tmp_path / "scores.csv"
    rc = main(["predict", "text", "C1", "--data-dir", str(data_dir), "--query", "adipose tissue",
               "--query", "invasive cancer", "--out", str(out)])
    assert rc == 0
    frame = pd.read_csv(out, index_col=0)
    assert list(frame.columns) == ["adipose tissue", "invasive cancer"] and len(frame) > 100
    with pytest.raises(SystemExit) as info:
        main(["train", "text", "--help"])
    assert info.value.code == 0
