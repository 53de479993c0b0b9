"""Expression model: set network, heads, ensemble uncertainty, training, persistence, metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from spotwhisper.expression.baselines import MeanBaseline, RidgeBaseline
from spotwhisper.expression.config import ExpressionConfig, TrainConfig
from spotwhisper.expression.metrics import evaluate_prediction, morans_i, pearson_per_gene, spatial_graph, topk_retrieval
from spotwhisper.expression.model import DeepSpotNet, nb_nll
from spotwhisper.expression.pretrained import ExpressionModel
from spotwhisper.expression.train import TrainingData, fit_ensemble
from spotwhisper.setmodel import NetConfig, SpotInputs


def synthetic(n=300, d=16, genes=12, seed=0):
    """Features on a 2-D grid of spots; each gene a fixed linear function of the spot features + noise."""
    rng = np.random.default_rng(seed)
    spot = rng.normal(size=(n, d)).astype(np.float32)
    sub = spot[:, None, :] + 0.3 * rng.normal(size=(n, 9, d)).astype(np.float32)
    ring = np.stack([(np.arange(n) + k) % n for k in (1, 2, 3)], axis=1)
    ring[:5, 2] = -1  # some spots miss a neighbour
    w = rng.normal(size=(d, genes)).astype(np.float32) / np.sqrt(d)
    y = 2 + spot @ w + 0.1 * rng.normal(size=(n, genes)).astype(np.float32)
    x = SpotInputs(torch.tensor(spot), torch.tensor(sub), torch.tensor(spot[np.where(ring >= 0, ring, 0)]), torch.tensor(ring >= 0))
    return x, y.astype(np.float32)


def small_cfg(**net) -> ExpressionConfig:
    return ExpressionConfig(
        net=NetConfig(hidden=32, rho_hidden=32, bottleneck=16, dropout=0.0, **net),
        train=TrainConfig(epochs=60, batch_size=32, lr=3e-3, ensemble=2, feature_noise=0.0, threads=1),
    )


def test_forward_shapes_and_neighbour_mask():
    x, y = synthetic(n=10)
    net = DeepSpotNet(16, 12, NetConfig(hidden=8, rho_hidden=8, bottleneck=4))
    net.eval()
    mu, logvar = net(x)
    assert mu.shape == logvar.shape == (10, 12)
    # a masked-out neighbour must not change the output
    x2 = dataclasses.replace(x, neigh=x.neigh.clone())
    x2.neigh[0, 2] += 100.0  # spot 0's third neighbour is masked (-1)
    assert torch.allclose(net(x2)[0][0], mu[0])
    x2.neigh[0, 0] += 100.0  # a present neighbour does change it
    assert not torch.allclose(net(x2)[0][0], mu[0])


def test_training_learns_and_beats_the_mean():
    x, y = synthetic()
    tr, te = torch.arange(0, 240), torch.arange(240, 300)
    cfg = small_cfg()
    ens = fit_ensemble(TrainingData(x.index(tr), y[:240]), cfg, progress=False)
    pred = ens.predict(x.index(te))
    assert pred.mean.shape == (60, 12)
    assert np.nanmean(pearson_per_gene(pred.mean, y[240:])) > 0.8
    mse_model = ((pred.mean - y[240:]) ** 2).mean()
    mse_mean = ((MeanBaseline().fit(None, y[:240]).predict(x.index(te)) - y[240:]) ** 2).mean()
    assert mse_model < 0.5 * mse_mean
    ridge = RidgeBaseline().fit(x.index(tr), y[:240]).predict(x.index(te))
    assert np.nanmean(pearson_per_gene(ridge, y[240:])) > 0.8  # the linear truth suits ridge too
    assert (pred.aleatoric > 0).all() and (pred.epistemic >= 0).all()


def test_epistemic_variance_grows_out_of_distribution():
    x, y = synthetic()
    ens = fit_ensemble(TrainingData(x, y), small_cfg(), progress=False)
    far = SpotInputs(x.spot * 8, x.sub * 8, x.neigh * 8, x.neigh_mask)
    assert ens.predict(far).epistemic.mean() > 5 * ens.predict(x).epistemic.mean()


def test_neighbours_held_as_rows_give_the_same_predictions_batch_by_batch():
    """Inference over a whole slide keeps the neighbour ring as rows (no (n, k, d) array) and gathers per batch."""
    x, y = synthetic(n=90)
    ring = torch.stack([(torch.arange(90) + k) % 90 for k in (1, 2, 3)], dim=1)
    ring[:5, 2] = -1
    lazy = SpotInputs(x.spot, x.sub, None, None, ring)
    assert torch.equal(lazy.gathered().neigh, x.neigh) and torch.equal(lazy.gathered().neigh_mask, x.neigh_mask)
    picked = lazy.index(torch.tensor([4, 0, 77]))  # neighbours come from the whole slide, not the batch
    assert torch.equal(picked.neigh, x.neigh[[4, 0, 77]]) and torch.equal(picked.neigh_mask, x.neigh_mask[[4, 0, 77]])
    ens = fit_ensemble(TrainingData(x, y), small_cfg(), progress=False)
    want = ens.predict(x, batch_size=1000)
    got = ens.predict(lazy, batch_size=7)  # batches smaller than the ring's reach
    np.testing.assert_allclose(got.mean, want.mean, atol=1e-5)
    np.testing.assert_allclose(got.epistemic, want.epistemic, atol=1e-6)
    both = SpotInputs.concat([lazy, x])
    assert both.ring is None and torch.equal(both.neigh[:90], x.neigh)


def test_negative_binomial_head():
    rng = np.random.default_rng(0)
    x, _ = synthetic(n=200, genes=6)
    rate = np.exp(1 + x.spot.numpy()[:, :6])  # per 10k
    lib = rng.integers(2000, 8000, size=200).astype(np.float32)
    counts = rng.poisson(rate * lib[:, None] / 1e4).astype(np.float32)
    log1p = np.log1p(counts / lib[:, None] * 1e4).astype(np.float32)
    with pytest.raises(ValueError, match="needs raw counts"):
        fit_ensemble(TrainingData(x, log1p), small_cfg(head="nb"), progress=False)
    ens = fit_ensemble(TrainingData(x, log1p, counts, lib), small_cfg(head="nb"), progress=False)
    pred = ens.predict(x)
    assert np.nanmean(pearson_per_gene(pred.mean, np.log1p(rate))) > 0.8
    assert (pred.aleatoric > 0).all()
    loss_good = nb_nll(torch.log(torch.tensor(rate)), torch.zeros(200, 6), torch.tensor(counts), torch.tensor(lib))
    loss_bad = nb_nll(torch.zeros(200, 6), torch.zeros(200, 6), torch.tensor(counts), torch.tensor(lib))
    assert loss_good < loss_bad


def test_save_and_load_round_trip(tmp_path):
    x, y = synthetic(n=80)
    cfg = small_cfg()
    ens = fit_ensemble(TrainingData(x, y), cfg, progress=False)
    model = ExpressionModel(ens, [f"G{i}" for i in range(12)], cfg, tile_um=200.0, in_dim=16)
    path = model.save_pretrained(tmp_path / "m", card="# card\n")
    back = ExpressionModel.from_pretrained(path)
    assert back.genes == model.genes and back.tile_um == 200.0 and (path / "model_card.md").exists()
    a, b = ens.predict(x).mean, back.ensemble.predict(x).mean
    assert np.abs(a - b).max() < 0.05  # float16 storage
    assert np.array_equal(b, back.ensemble.predict(x).mean)  # deterministic in eval mode
    with pytest.raises(FileNotFoundError, match="not an expression model folder"):
        ExpressionModel.from_pretrained(tmp_path)


def test_metrics_against_references():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    r = pearson_per_gene(a, b)
    assert r[1] == pytest.approx(pearsonr(a[:, 1], b[:, 1]).statistic)
    const = np.ones((50, 2))
    assert np.isnan(pearson_per_gene(const, b[:, :2])).all()
    # Moran's I: a smooth gradient on a grid is strongly autocorrelated, noise is not
    gx, gy = np.meshgrid(np.arange(15), np.arange(15))
    coords = np.stack([gx.ravel(), gy.ravel()], 1).astype(float)
    vals = np.stack([coords[:, 0], rng.normal(size=225)], 1)
    mi = morans_i(vals, spatial_graph(coords))
    assert mi[0] > 0.8 and abs(mi[1]) < 0.15
    assert topk_retrieval(vals, vals, k=1) == 1.0
    figs = evaluate_prediction(vals, vals, coords, top_variable=2, k=1)
    assert figs["pearson_all"] == pytest.approx(1.0) and figs["mse"] == 0.0
