"""Fit the expression ensemble on image features and measured expression."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..setmodel import SpotInputs, feature_stats
from .config import ExpressionConfig
from .model import DeepSpotNet, Ensemble, gaussian_nll, nb_nll

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Inputs and targets of ``n`` spots: ``log1p`` ``(n, genes)`` log1p(CP10k) of the panel,
    ``counts`` ``(n, genes)`` raw counts and ``libsize`` ``(n,)`` (needed by the NB head).
    ``copies``: how many versions of each spot the rows hold (1 + augmented copies, see
    ``tiles.AugmentConfig``); an epoch then covers every version, and training runs
    ``epochs / copies`` of them, so augmentation replaces optimisation steps instead of adding them."""

    inputs: SpotInputs
    log1p: np.ndarray
    counts: np.ndarray | None = None
    libsize: np.ndarray | None = None
    copies: int = 1


def fit_ensemble(data: TrainingData, cfg: ExpressionConfig, progress: bool = True) -> Ensemble:
    """Train ``cfg.train.ensemble`` members (different seeds) and wrap them in an :class:`Ensemble`.

    Runs with ``cfg.train.threads`` torch and BLAS threads (restored afterwards).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads)
    try:
        with threadpool_limits(cfg.train.threads):
            return _fit(data, cfg, progress)
    finally:
        torch.set_num_threads(previous)


def _fit(data: TrainingData, cfg: ExpressionConfig, progress: bool) -> Ensemble:
    tc = cfg.train
    if cfg.net.head == "nb" and (data.counts is None or data.libsize is None):
        raise ValueError("the negative-binomial head needs raw counts and library sizes")
    feat_mean, feat_std, proj = feature_stats(data.inputs, cfg.net.pca_dim)
    gene_mean = data.log1p.mean(0)
    gene_std = data.log1p.std(0) + 1e-3
    ref_lib = float(np.median(data.libsize)) if data.libsize is not None else 1e4
    ens = Ensemble([], feat_mean, feat_std, gene_mean, gene_std, ref_lib, proj)
    x = ens.standardize(data.inputs)
    y = torch.as_tensor((data.log1p - gene_mean) / gene_std, dtype=torch.float32)
    counts = torch.as_tensor(data.counts, dtype=torch.float32) if data.counts is not None else None
    lib = torch.as_tensor(data.libsize, dtype=torch.float32) if data.libsize is not None else None
    n = len(x)
    members = []
    epochs = max(1, round(tc.epochs / max(1, data.copies)))
    steps = tc.ensemble * epochs
    bar = tqdm(total=steps, desc="train expression", unit="epoch", disable=not progress, leave=False)
    for m in range(tc.ensemble):
        gen = torch.Generator().manual_seed(tc.seed + m)
        torch.manual_seed(tc.seed + m)
        net = DeepSpotNet(x.spot.shape[1], y.shape[1], cfg.net)
        opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, tc.batch_size):
                idx = perm[start : start + tc.batch_size]
                xb = _noisy(x.index(idx), tc.feature_noise, gen)
                a, b = net(xb)
                if cfg.net.head == "gaussian":
                    loss = gaussian_nll(a, b, y[idx])
                else:
                    loss = nb_nll(a, b, counts[idx], lib[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(member=m + 1, loss=f"{loss.item():.3f}")
        net.eval()
        members.append(net)
    bar.close()
    ens.members.extend(members)
    return ens


def _noisy(x: SpotInputs, std: float, gen: torch.Generator) -> SpotInputs:
    if std <= 0:
        return x
    f = lambda t: None if t is None else t + std * torch.randn(t.shape, generator=gen)  # noqa: E731
    return SpotInputs(f(x.spot), f(x.sub), f(x.neigh), x.neigh_mask)
