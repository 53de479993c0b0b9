"""Our own image → text route: a head mapping H&E features into the transcriptome–text space.

The head (the expression model's set trunk over spot, sub-tile and neighbour features, then a
projection) is trained on paired spots to reproduce the text model's embedding of the spot's
*measured* transcriptome: an InfoNCE loss against the batch's teacher embeddings plus a cosine
distillation term. Images can then be searched with the same text queries as transcriptomes — a
tri-modal alignment (image ↔ transcriptome ↔ text) without any image–caption pairs.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm.auto import tqdm

from .. import keys
from ..atomic import atomic_dir
from ..config import from_dict, load_config, to_dict
from ..language import TextExpressionModel
from ..setmodel import NetConfig, SetTrunk, SpotInputs, feature_stats, inputs_for
from ..tiles.config import AugmentConfig

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "aligned-default"
COARSE_DIR = DEFAULT_DIR.parent / "aligned-coarse"  #: the aligned head for slides coarser than the default holds
ROUTE = keys.ALIGNED
EMB_KEY = keys.IMAGE_TEXT_EMB_ALIGNED


@dataclass
class AlignedConfig:
    """Training of the aligned head (``configs/aligned.yaml``)."""

    name: str = "aligned-default"  #: model folder name: spotwhisper/pretrained/<name> shipped, <user data>/models/<name> from ``train imagetext`` without --out
    encoder: str = "efficientnet_lite0"
    sections: list[str] = field(default_factory=lambda: ["C2", "C3", "C4", "C5", "C6"])
    net: NetConfig = field(default_factory=lambda: NetConfig(dropout=0.5))
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    temperature: float = 0.07  #: InfoNCE temperature
    distill_weight: float = 1.0  #: weight of 1 - cos(image, teacher)
    feature_noise: float = 0.1
    ensemble: int = 3
    seed: int = 0
    threads: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)  #: stain / resolution copies of training sections


class AlignedHead(nn.Module):
    """Set trunk → linear → L2-normalised ``(n, D)``; standardisation and PCA kept as buffers."""

    def __init__(self, in_dim: int, proj_dim: int, out_dim: int, cfg: NetConfig, n_members: int):
        super().__init__()
        self.members = nn.ModuleList(SetTrunk(proj_dim, cfg) for _ in range(n_members))
        self.outs = nn.ModuleList(nn.Linear(cfg.bottleneck, out_dim) for _ in range(n_members))
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.register_buffer("projection", torch.eye(in_dim, proj_dim))

    def prepare(self, x: SpotInputs) -> SpotInputs:
        f = lambda t: None if t is None else ((t - self.feat_mean) / self.feat_std) @ self.projection  # noqa: E731
        return SpotInputs(f(x.spot), f(x.sub), f(x.neigh), x.neigh_mask)

    def member(self, i: int, x: SpotInputs) -> torch.Tensor:
        return F.normalize(self.outs[i](self.members[i].trunk(x)), dim=-1)

    @torch.inference_mode()
    def embed(self, x: SpotInputs, batch_size: int = 1024) -> np.ndarray:
        """Mean of the members' embeddings, re-normalised, for raw inputs → ``(n, D)`` float32."""
        self.eval()
        out = []
        for s in range(0, len(x), batch_size):
            xb = self.prepare(x.index(torch.arange(s, min(s + batch_size, len(x)))))
            z = torch.stack([self.member(i, xb) for i in range(len(self.members))]).mean(0)
            out.append(F.normalize(z, dim=-1))
        return torch.cat(out).numpy().astype(np.float32)


def fit_aligned(inputs: SpotInputs, teacher: np.ndarray, cfg: AlignedConfig, progress: bool = True,
                copies: int = 1) -> AlignedHead:
    """Train the head on image features ``inputs`` and teacher embeddings ``(n, D)``; with ``copies``
    versions of every spot in the rows (augmentation), ``cfg.epochs / copies`` epochs are run."""
    mean, std, proj = feature_stats(inputs, cfg.net.pca_dim)
    in_dim = inputs.spot.shape[1]
    p = proj if proj is not None else np.eye(in_dim, dtype=np.float32)
    head = AlignedHead(in_dim, p.shape[1], teacher.shape[1], cfg.net, cfg.ensemble)
    head.feat_mean.copy_(torch.as_tensor(mean)), head.feat_std.copy_(torch.as_tensor(std))
    head.projection = torch.as_tensor(p)
    t = F.normalize(torch.as_tensor(teacher, dtype=torch.float32), dim=-1)
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads), torch.no_grad():
            x = head.prepare(inputs)
        epochs = max(1, round(cfg.epochs / max(1, copies)))
        bar = tqdm(total=cfg.ensemble * epochs, desc="train aligned head", disable=not progress, leave=False)
        for i in range(cfg.ensemble):
            with threadpool_limits(cfg.threads):
                _fit_member(head, i, x, t, cfg, bar, epochs)
        bar.close()
    finally:
        torch.set_num_threads(previous)
    head.eval()
    return head


def _fit_member(head: AlignedHead, i: int, x: SpotInputs, t: torch.Tensor, cfg: AlignedConfig, bar, epochs: int) -> None:
    gen = torch.Generator().manual_seed(cfg.seed + i)
    torch.manual_seed(cfg.seed + i)
    params = list(head.members[i].parameters()) + list(head.outs[i].parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    head.train()
    n = len(x)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            xb = x.index(idx)
            if cfg.feature_noise > 0:
                f = lambda a: None if a is None else a + cfg.feature_noise * torch.randn(a.shape, generator=gen)  # noqa: E731
                xb = SpotInputs(f(xb.spot), f(xb.sub), f(xb.neigh), xb.neigh_mask)
            z = head.member(i, xb)
            logits = z @ t[idx].T / cfg.temperature
            target = torch.arange(len(idx))
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            loss = loss + cfg.distill_weight * (1 - (z * t[idx]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.update(1)
        bar.set_postfix(member=i + 1, loss=f"{loss.item():.3f}")


class AlignedImageModel:
    """A trained :class:`AlignedHead` with its config and the text model it is aligned to."""

    def __init__(self, head: AlignedHead, cfg: AlignedConfig, text_fingerprint: str, metrics: dict | None = None):
        self.head, self.cfg, self.text_fingerprint, self.metrics = head, cfg, text_fingerprint, metrics or {}

    @property
    def encoder(self) -> str:
        return self.cfg.encoder

    def embed(self, adata: ad.AnnData, store: bool = True) -> np.ndarray:
        """Spot embeddings ``(n, D)`` from the image features in ``adata``; with ``store`` they go to
        ``obsm["image_text_emb_aligned"]`` and the model record to ``uns["embedding_models"]``."""
        x = inputs_for(adata, self.encoder, self.cfg.net, ring=True)
        if x.spot.shape[1] != self.head.feat_mean.shape[0]:
            raise ValueError(f"features have {x.spot.shape[1]} dimensions; the aligned head expects {self.head.feat_mean.shape[0]}")
        emb = self.head.embed(x)
        if store:
            adata.obsm[EMB_KEY] = emb
            adata.uns.setdefault(keys.IMAGE_TEXT_INFO, {})[ROUTE] = {
                "encoder": self.encoder, "text_model": self.text_fingerprint, "head": self.fingerprint()}
            # the vectors live in the text model's space, whichever head (default or coarse) made them,
            # so one collection may hold slides read by either: the route is identified by that space
            adata.uns.setdefault(keys.EMBEDDING_MODELS, {})[EMB_KEY] = {
                "name": "aligned", "version": self.text_fingerprint, "dim": int(emb.shape[1])}
        return emb

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.head.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes()[:4096])
        return h.hexdigest()[:16]

    def save_pretrained(self, path: str | Path, card: str | None = None) -> Path:
        """Write ``config.yaml``, ``model.safetensors`` (float16 weights) and ``model_card.md`` atomically."""
        dest = Path(path)
        with atomic_dir(dest) as tmp:
            state = {k: (v.float() if k in ("feat_mean", "feat_std", "projection") else v.half()).contiguous()
                     for k, v in self.head.state_dict().items()}
            save_file(state, tmp / "model.safetensors")
            meta = {"config": to_dict(self.cfg), "text_model": self.text_fingerprint, "metrics": self.metrics,
                    "in_dim": int(self.head.feat_mean.shape[0]), "proj_dim": int(self.head.projection.shape[1]),
                    "out_dim": int(self.head.outs[0].out_features)}
            (tmp / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            if card:
                (tmp / "model_card.md").write_text(card)
        return dest

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, text_model: TextExpressionModel | None = None) -> AlignedImageModel:
        """Load a saved head; with ``text_model`` given, refuse a head aligned to another text model."""
        src = Path(path) if path is not None else DEFAULT_DIR
        if not (src / "config.yaml").exists() or not (src / "model.safetensors").exists():
            raise FileNotFoundError(f"{src}: not an aligned-head folder (needs config.yaml and model.safetensors)")
        meta = yaml.safe_load((src / "config.yaml").read_text())
        cfg = from_dict(AlignedConfig, meta["config"])
        head = AlignedHead(meta["in_dim"], meta["proj_dim"], meta["out_dim"], cfg.net, cfg.ensemble)
        head.load_state_dict({k: v.float() for k, v in load_file(src / "model.safetensors").items()})
        head.eval()
        if text_model is not None and text_model.fingerprint() != meta["text_model"]:
            raise ValueError(
                f"{src} was aligned to text model {meta['text_model']}, not the loaded {text_model.fingerprint()}; "
                "retrain it with `spotwhisper train imagetext`"
            )
        return cls(head, cfg, meta["text_model"], meta.get("metrics"))


def load_aligned_config(path: str | Path | None = "aligned") -> AlignedConfig:
    return load_config(AlignedConfig, path)
