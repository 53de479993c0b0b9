"""DeepSpot-style set network with Gaussian or negative-binomial heads, and a small ensemble.

Per spot the network sees three sets of image features: the spot tile ``(d,)``, its sub-tiles
``(g*g, d)`` and its neighbours' spot tiles ``(k, d)`` (missing neighbours masked). The set trunk
(:class:`spotwhisper.setmodel.SetTrunk`: a shared MLP ``phi`` per tile, mean-pooled sets, ``rho``)
feeds per-gene heads.

Heads (STimage-style uncertainty):

* ``gaussian`` – mean and log-variance of standardised log1p(CP10k) per gene (aleatoric = variance).
* ``nb`` – log rate per 10k counts and per-gene log dispersion; trained with the negative-binomial
  likelihood of raw counts given the spot's library size. Mean on the log1p scale is
  ``log1p(rate)``; its variance follows by the delta method at a reference library size.

An :class:`Ensemble` averages member means; the spread of member means is the epistemic variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..setmodel import NetConfig, SetTrunk, SpotInputs


class DeepSpotNet(SetTrunk):
    """:class:`SetTrunk` → per-gene outputs (Gaussian or negative-binomial head)."""

    def __init__(self, in_dim: int, n_genes: int, cfg: NetConfig):
        super().__init__(in_dim, cfg)
        self.mean = nn.Linear(cfg.bottleneck, n_genes)
        if cfg.head == "gaussian":
            self.logvar = nn.Linear(cfg.bottleneck, n_genes)
        else:
            self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, x: SpotInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (mean, second) each ``(n, genes)``: gaussian → (mean, log-variance);
        nb → (log rate per 10k, log dispersion broadcast)."""
        h = self.trunk(x)
        mu = self.mean(h)
        if self.cfg.head == "gaussian":
            return mu, self.logvar(h).clamp(-8.0, 6.0)
        return mu, self.log_theta.expand_as(mu)


def gaussian_nll(mu: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (constant dropped)."""
    return 0.5 * (logvar + (target - mu) ** 2 / logvar.exp()).mean()


def nb_nll(log_rate: torch.Tensor, log_theta: torch.Tensor, counts: torch.Tensor, libsize: torch.Tensor) -> torch.Tensor:
    """Mean negative-binomial NLL of ``counts`` with mean ``exp(log_rate) * libsize / 1e4``."""
    mu = torch.exp(log_rate) * (libsize.unsqueeze(-1) / 1e4)
    theta = torch.exp(log_theta)
    eps = 1e-8
    ll = (
        torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1)
        + theta * (torch.log(theta + eps) - torch.log(theta + mu + eps))
        + counts * (torch.log(mu + eps) - torch.log(theta + mu + eps))
    )
    return -ll.mean()


@dataclass
class Prediction:
    """Per spot and gene, on the log1p(CP10k) scale: ``mean``, ``aleatoric`` and ``epistemic``
    variance, each ``(n, genes)`` float32."""

    mean: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


class Ensemble(nn.Module):
    """Members of identical architecture; inputs/targets standardisation kept as buffers."""

    def __init__(self, members: list[DeepSpotNet], feat_mean: np.ndarray, feat_std: np.ndarray,
                 gene_mean: np.ndarray, gene_std: np.ndarray, ref_libsize: float = 1e4,
                 projection: np.ndarray | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("feat_mean", torch.as_tensor(feat_mean, dtype=torch.float32))
        self.register_buffer("feat_std", torch.as_tensor(feat_std, dtype=torch.float32))
        proj = np.eye(len(np.atleast_1d(feat_mean)), dtype=np.float32) if projection is None else projection
        self.register_buffer("projection", torch.as_tensor(proj, dtype=torch.float32))  # (d, p)
        self.register_buffer("gene_mean", torch.as_tensor(gene_mean, dtype=torch.float32))
        self.register_buffer("gene_std", torch.as_tensor(gene_std, dtype=torch.float32))
        self.register_buffer("ref_libsize", torch.tensor(float(ref_libsize)))

    @property
    def head(self) -> str:
        return self.members[0].cfg.head

    def standardize(self, x: SpotInputs) -> SpotInputs:
        """Standardise features and project them on the stored components, ``(…, d)`` → ``(…, p)``."""
        f = lambda t: None if t is None else ((t - self.feat_mean) / self.feat_std) @ self.projection  # noqa: E731
        return SpotInputs(f(x.spot), f(x.sub), f(x.neigh), x.neigh_mask)

    def member_moments(self, member: DeepSpotNet, x: SpotInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and aleatoric variance of one member on the log1p scale, ``(n, genes)`` each."""
        a, b = member(x)
        if self.head == "gaussian":
            mean = a * self.gene_std + self.gene_mean
            var = b.exp() * self.gene_std**2
            return mean, var
        rate = a.exp()
        scale = 1e4 / self.ref_libsize
        mu_counts = rate / scale
        var_y = scale**2 * (mu_counts + mu_counts**2 / b.exp())
        return torch.log1p(rate), var_y / (1 + rate) ** 2

    @torch.inference_mode()
    def predict(self, x: SpotInputs, batch_size: int = 512) -> Prediction:
        """Ensemble prediction for raw (unstandardised) inputs."""
        self.eval()
        n, genes = len(x), self.gene_mean.shape[0]
        mean, alea, epi = (np.empty((n, genes), np.float32) for _ in range(3))  # filled batch by batch: no copies
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            xb = self.standardize(x.index(torch.arange(rows.start, rows.stop)))
            ms, vs = zip(*(self.member_moments(m, xb) for m in self.members))
            stack = torch.stack(ms)
            mean[rows] = stack.mean(0).numpy()
            alea[rows] = torch.stack(vs).mean(0).numpy()
            epi[rows] = stack.var(0, unbiased=False).numpy()
        return Prediction(mean, alea, epi)
