"""The benchmark on real inputs: her2st C1 with the shipped text model, scanpy's pbmc68k_reduced as
bring-your-own data through the CLI, and the PLIP / CONCH / fused plumbing on C2 tiles with tiny
random image–text models (no real weights can be downloaded here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spotwhisper.bench import BenchConfig, ImageTextWeights, RouteContext, TextModels, load_task, route_scores, run_task
from spotwhisper.bench.tasks import her2st_samples, make_sample, task_vocabulary
from spotwhisper.bench.text_models import fold_key, held_out_check
from spotwhisper.cli import main
from spotwhisper.language import TextExpressionModel
from spotwhisper.language.config import TextConfig
from spotwhisper.language.evaluate import evaluate_section

from .test_clip_models import build_tiny_conch, build_tiny_plip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shipped():
    return TextExpressionModel.from_pretrained()


def _ctx(task, shipped, cfg=None, weights=None, data_dir=None):
    tm = TextModels(data_dir, TextConfig(), shipped=shipped, progress=False)
    return RouteContext(cfg=cfg or BenchConfig(bootstrap=100), vocabulary=task_vocabulary(task), text_models=tm,
                        data_dir=data_dir, weights=weights or ImageTextWeights(), progress=False)


def test_regions_on_c1_match_the_language_evaluation(data_dir, shipped):
    task = load_task("regions")
    samples = her2st_samples(data_dir, task, ["C1"], progress=False)
    ctx = _ctx(task, shipped, data_dir=data_dir)
    res = run_task(task, samples, ctx, routes=["measured", "inferred", "plip", "fused", "marker", "chance"])
    scope = res.scopes[0]
    # image routes cannot run on C1 (no H&E), and say so
    assert scope.unavailable == {"transcriptome": "no H&E", "plip": "no H&E", "fused": "no H&E"}
    assert res.models == {"C": "shipped text-default (trained on her2st D, E, F, G, H)"}
    assert "B1" in task.sections  # patient B (never seen by the shipped model) has pathologist labels too
    # the measured route reproduces spotwhisper.language's evaluation of the same section and classes
    ref = evaluate_section(samples[0].adata, shipped, [c.name for c in task.classes], vocabulary=ctx.vocabulary)
    ref = ref[ref["method"] == "model"].set_index("class")["auroc"]
    got = scope.long[scope.long["route"] == "measured"].set_index("class")
    big = got["n_pos"] >= task.min_class_spots  # smaller classes are not scored (C1 has 3 adipose spots)
    assert big.sum() >= 2 and got.loc[~big, "auroc"].isna().all()
    assert np.allclose(got.loc[big, "auroc"], ref.reindex(got.index[big]), equal_nan=True)
    overall = scope.summary.set_index(["route", "class"])["mean"]
    assert overall[("measured", "overall (weighted)")] > 0.65  # far above chance on a held-out patient
    assert abs(overall[("chance", "overall (weighted)")] - 0.5) < 0.15


def test_text_models_never_score_their_training_patients(shipped, tmp_path):
    tm = TextModels(None, TextConfig(), shipped=shipped, cache_dir=tmp_path)
    assert tm.for_patient("C") is shipped and tm.for_patient("B") is shipped and tm.for_patient(None) is shipped
    assert not tm.uses_shipped("D") and tm.shipped_train == {"D", "E", "F", "G", "H"}
    with pytest.raises(RuntimeError, match="trained on patient D"):
        held_out_check(shipped, "D")
    held_out_check(shipped, "C")
    cfg = TextConfig()
    other = TextConfig()
    other.train.epochs += 1
    key = fold_key(cfg, ["A", "B"], ["C1"], "data1", "enc1")
    assert key != fold_key(other, ["A", "B"], ["C1"], "data1", "enc1")
    # the data folder's content and the text encoder are part of the key
    assert key != fold_key(cfg, ["A", "B"], ["C1"], "data2", "enc1")
    assert key != fold_key(cfg, ["A", "B"], ["C1"], "data1", "enc2")
    # where caption embeddings are cached does not change the model
    assert key == fold_key(TextConfig(cache_dir="elsewhere"), ["A", "B"], ["C1"], "data1", "enc1")


PBMC_TASK = """\
name: pbmc
description: scanpy pbmc68k_reduced blood cell types (bring-your-own format check)
labels: {source: obs, key: unused}
sample_key: phase
classes:
  - {name: B cells, query: B cells, match: ["CD19+ B"]}
  - {name: monocytes, query: macrophages, match: ["CD14+ Monocyte"], genes: [LYZ, CST3, FCN1, S100A9, TYROBP]}
  - {name: T cells, query: T cells, match: ["CD4+*", "CD8+*"]}
"""


def test_bring_your_own_h5ad_through_the_cli(tmp_path, capsys):
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()  # X is scaled; .raw holds log1p expression
    h5ad = tmp_path / "pbmc.h5ad"
    adata.write_h5ad(h5ad)
    (tmp_path / "pbmc.yaml").write_text(PBMC_TASK)
    code = main(["bench", "zero-shot", "--h5ad", str(h5ad), "--task-config", str(tmp_path / "pbmc.yaml"),
                 "--label-key", "bulk_labels", "--out", str(tmp_path / "res" / "zs"), "--bootstrap", "50",
                 "--routes", "measured", "marker", "chance", "plip", "--no-progress"])
    assert code == 0
    out = json.loads((tmp_path / "res" / "zs_pbmc.json").read_text())
    scope = out["scopes"][0]
    assert sorted(scope["samples"]) == ["G1", "G2M", "S"]
    assert scope["unavailable"]["plip"] == "no H&E"
    assert "gene panel" in scope["unavailable"]["measured"]  # 765 genes: too little of the text model's panel
    summ = {(r["route"], r["class"]): r for r in scope["summary"]}
    assert summ[("marker", "B cells")]["mean"] > 0.9 and summ[("marker", "monocytes")]["mean"] > 0.9
    assert summ[("marker", "B cells")]["n_samples"] == 3
    assert 0.3 < summ[("chance", "overall (weighted)")]["mean"] < 0.7
    md = (tmp_path / "res" / "zs_pbmc.md").read_text()
    assert "--label-key bulk_labels" in md and "| B cells | 95 |" in md
    assert "| class | spots |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    plip = build_tiny_plip(tmp_path_factory.mktemp("plip"))
    ckpt, arch, _ = build_tiny_conch(tmp_path_factory.mktemp("conch"))
    return ImageTextWeights(plip=str(plip), conch=ckpt), arch


def test_image_text_and_fused_plumbing_on_c2(c2, shipped, tiny_weights):
    from spotwhisper.encoders.clip_models import load_conch
    from spotwhisper.imagetext.tile_zeroshot import score_tiles
    from spotwhisper.search.engine import SearchEngine

    task = load_task("celltypes")
    sample = make_sample("C2", c2[:24].copy(), task, "C")
    weights, conch_arch = tiny_weights
    ctx = _ctx(task, shipped, weights=weights)
    ctx._cache["conch"] = load_conch(weights.conch, arch=conch_arch)  # the tiny architecture, not ViT-B/16
    queries = [c.query for c in task.classes]
    probs = {m: route_scores(m, sample, queries, ctx) for m in ("plip", "conch")}
    for m, p in probs.items():
        assert p.shape == (24, 4) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
        model = ctx.image_text_model(m)
        emb = sample.adata.obsm[f"image_text_emb_{m}"]
        ref = score_tiles(model, emb, queries, vocabulary=ctx.vocabulary)
        assert np.allclose(p, ref.probabilities, atol=1e-6)
    # fused = the search engine's own scoring: the weighted mean of the routes' relevance (here PLIP and CONCH)
    weights = {"plip": 1.0, "conch": 3.0, "measured": 1.0}
    ctx._cache["fusion"] = weights
    fused = route_scores("fused", sample, queries, ctx)
    view = ctx.search_slide(sample, weights)
    assert set(k for k in view.obsm if k.startswith("image_text_emb")) == {"image_text_emb_plip", "image_text_emb_conch"}
    engine = SearchEngine({"C2": view}, text_model=shipped, image_text_models={m: ctx.image_text_model(m) for m in ("plip", "conch")})
    for j, q in enumerate(queries):
        hits = engine.search(q, weights=weights, explain=False).slides[0]
        assert np.allclose(fused[:, j], hits.fused, atol=1e-9)
        assert np.allclose(hits.fused, (hits.calibrated["plip"] + 3 * hits.calibrated["conch"]) / 4)
    assert ctx._cache["fused_parts"] == {"plip", "conch"}  # measured expression never enters the fused search


def test_held_out_concept_models_are_cached_with_their_captions_and_checked(data_dir, shipped, tmp_path):
    """The zero-shot routes' models: same training patients as the transfer model, no caption naming
    the concept (its caption list is saved and re-checked on every load)."""
    from spotwhisper.bench.tasks import load_concepts
    from spotwhisper.bench.text_models import TRAIN_CAPTIONS
    from spotwhisper.language.heldout import captions_naming

    cfg = TextConfig(cache_dir=str(tmp_path / "text-cache"))
    cfg.split.sections = ["C1", "D1", "G2"]
    cfg.captions.genes = cfg.captions.tls = False
    cfg.model.embed_dim, cfg.model.expression.hidden, cfg.train.epochs = 32, [64], 1
    concept = load_concepts()["adipose"]
    tm = TextModels(data_dir, cfg, shipped=shipped, cache_dir=tmp_path / "bench", progress=False)
    model = tm.for_patient("C", concept)  # patient C is scored by the shipped model: same patients, D and G here
    assert model is not shipped and model.meta["heldout_concept"] == "adipose"
    assert model.meta["train_patients"] == ["D", "G"] and model.meta["removed_captions"] > 0
    held_out_check(model, "C")
    folder = next((tmp_path / "bench" / "text-heldout").glob("*/shipped/adipose-*"))
    texts = (folder / TRAIN_CAPTIONS).read_text().splitlines()
    assert texts and captions_naming(texts, concept) == []
    assert captions_naming(tm.training_texts("C"), concept)  # the transfer model's captions do name it
    again = TextModels(data_dir, cfg, shipped=shipped, cache_dir=tmp_path / "bench", progress=False)
    assert again.for_patient("C", concept).fingerprint() == model.fingerprint()  # from the cache
    (folder / TRAIN_CAPTIONS).write_text("\n".join(texts + ["adipose tissue"]))
    with pytest.raises(RuntimeError, match="not a model without concept 'adipose'"):
        TextModels(data_dir, cfg, shipped=shipped, cache_dir=tmp_path / "bench", progress=False).for_patient("C", concept)


def test_bench_a_labelled_space_ranger_folder_through_the_cli(tmp_path, capsys):
    """`bench zero-shot --visium DIR --labels CSV`: the label values become the classes; spots of the CSV
    are matched by barcode, the others left out; bad input is a clear error."""
    from .test_visium import write_visium

    outs, tissue, _ = write_visium(tmp_path / "sr")
    barcodes = tissue["barcode"].tolist()
    labels = tmp_path / "labels.csv"
    rows = [f"{b},{'invasive cancer' if i < 20 else 'adipose tissue'}" for i, b in enumerate(barcodes[:40])]
    labels.write_text("barcode,region\n" + "\n".join(rows) + "\n")
    prefix = tmp_path / "res" / "zs"
    code = main(["bench", "zero-shot", "--visium", str(outs), "--labels", str(labels), "--label-column", "region",
                 "--mpp", "0.5", "--routes", "measured", "chance", "--bootstrap", "20", "--out", str(prefix),
                 "--no-progress"])
    assert code == 0
    out = json.loads(next((tmp_path / "res").glob("zs_*.json")).read_text())
    scope = out["scopes"][0]
    assert scope["class_sizes"] == {"adipose tissue": 20, "invasive cancer": 20}  # 10 unlabelled spots left out
    assert "gene panel" in scope["unavailable"]["measured"]  # synthetic genes: the text model cannot read them
    assert {r["class"] for r in scope["summary"] if r["route"] == "chance"} >= {"invasive cancer", "adipose tissue"}
    assert "--visium" in out["command"] and "--mpp 0.5" in out["command"] and "--data-dir" not in out["command"]
    capsys.readouterr()
    assert main(["bench", "zero-shot", "--visium", str(outs), "--no-progress"]) == 1
    assert "go together" in capsys.readouterr().err
    bad = tmp_path / "other.csv"
    bad.write_text("barcode,region\nNOPE-1,tumour\n")
    assert main(["bench", "zero-shot", "--visium", str(outs), "--labels", str(bad), "--no-progress"]) == 1
    assert "none of its barcodes" in capsys.readouterr().err
