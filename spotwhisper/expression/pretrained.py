"""Save, load (``from_pretrained``) and apply a trained expression model.

A model folder holds ``config.yaml`` (the :class:`ExpressionConfig` plus input size and tile
geometry), ``genes.txt`` (the panel, in output order), ``model.safetensors`` (member weights in
float16, standardisation buffers in float32) and ``model_card.md``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import yaml
from safetensors.torch import load_file, save_file

from .. import keys
from ..atomic import atomic_dir
from ..config import from_dict, to_dict
from ..setmodel import inputs_for
from ..tiles.config import SpotTileConfig
from .config import ExpressionConfig
from .familiarity import FeatureReference
from .model import DeepSpotNet, Ensemble, Prediction

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "expression-default"
#: the shipped model for slides coarser than the default model holds (stain statistics read at 3.5 µm/px)
COARSE_MODEL_DIR = DEFAULT_MODEL_DIR.parent / "expression-coarse"
BUFFERS = ("feat_mean", "feat_std", "gene_mean", "gene_std", "ref_libsize", "projection")
#: the records of ``config.yaml`` this class reads itself (anything else is kept in ``ExpressionModel.extra``)
META_KEYS = ("config", "tile_um", "ring_pitch_um", "in_dim", "n_members", "metrics")
#: warn when a slide's tiles differ from the training tiles by more than this factor (µm)
TILE_MISMATCH = 1.25


class ExpressionModel:
    """An :class:`Ensemble` with its gene panel, config and the tile geometry it was trained on."""

    def __init__(self, ensemble: Ensemble, genes: list[str], cfg: ExpressionConfig, tile_um: float, in_dim: int,
                 metrics: dict[str, Any] | None = None, ring_pitch_um: float | None = None):
        self.ensemble, self.genes, self.cfg = ensemble, list(genes), cfg
        self.tile_um, self.in_dim, self.metrics = float(tile_um), int(in_dim), metrics or {}
        #: spot pitch (µm) of the training slides, which the ring of neighbours was measured in
        self.ring_pitch_um = float(ring_pitch_um or tile_um)
        self.extra: dict[str, Any] = {}  #: other records saved beside the weights (``config.yaml``)
        #: the training slides' feature distribution (``familiarity.npz``), when the model folder has one
        self.familiarity: FeatureReference | None = None

    def tile_config(self, base: SpotTileConfig | None = None) -> SpotTileConfig:
        """The spot-tile geometry the model was trained on (tile side and ring pitch in µm; sub-tile
        grid and ring size from ``base``): every slide is read with it, whatever its spot pitch."""
        return replace(base or SpotTileConfig(), tile_um=self.tile_um, ring_pitch_um=self.ring_pitch_um)

    @property
    def encoder(self) -> str:
        return self.cfg.encoder

    def save_pretrained(self, path: str | Path, card: str | None = None) -> Path:
        """Write the model folder atomically (temporary folder, then rename)."""
        dest = Path(path)
        with atomic_dir(dest, keep=("model_card.md",)) as tmp:
            state = {}
            for k, v in self.ensemble.state_dict().items():
                state[k] = v.float() if k in BUFFERS else v.half()
            save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
            meta = {"config": to_dict(self.cfg), "tile_um": self.tile_um, "ring_pitch_um": self.ring_pitch_um,
                    "in_dim": self.in_dim, "n_members": len(self.ensemble.members), "metrics": self.metrics, **self.extra}
            (tmp / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            (tmp / "genes.txt").write_text("\n".join(self.genes) + "\n")
            if card:
                (tmp / "model_card.md").write_text(card)
            if self.familiarity is not None:
                self.familiarity.save(tmp)
        return dest

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> ExpressionModel:
        """Load a model folder (default: the shipped ``expression-default``)."""
        src = Path(path) if path is not None else DEFAULT_MODEL_DIR
        for name in ("config.yaml", "genes.txt", "model.safetensors"):
            if not (src / name).exists():
                raise FileNotFoundError(f"{src}: not an expression model folder (missing {name})")
        meta = yaml.safe_load((src / "config.yaml").read_text())
        cfg = from_dict(ExpressionConfig, meta["config"])
        genes = [g for g in (src / "genes.txt").read_text().split("\n") if g]
        state = load_file(src / "model.safetensors")
        net_in = state["projection"].shape[1]
        members = [DeepSpotNet(net_in, len(genes), cfg.net) for _ in range(meta["n_members"])]
        ens = Ensemble(members, *(np.zeros(1) for _ in range(4)))
        for b in BUFFERS:  # buffers take their saved shapes
            setattr(ens, b, state[b].float())
        ens.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        ens.eval()
        model = cls(ens, genes, cfg, meta["tile_um"], meta["in_dim"], meta.get("metrics"), meta.get("ring_pitch_um"))
        model.extra = {k: v for k, v in meta.items() if k not in META_KEYS}
        model.familiarity = FeatureReference.load(src)
        return model

    def predict_arrays(self, adata: ad.AnnData) -> Prediction:
        """Prediction for an AnnData holding this model's image features (``encoders.extract_features``)."""
        x = inputs_for(adata, self.encoder, self.cfg.net, ring=True)
        if x.spot.shape[1] != self.in_dim:
            raise ValueError(f"features have {x.spot.shape[1]} dimensions; the model expects {self.in_dim} ({self.encoder})")
        info = adata.uns.get(keys.FEATURES_UNS, {}).get(self.encoder, {})
        tile_um = info.get("tile_um")
        if tile_um and not 1 / TILE_MISMATCH < tile_um / self.tile_um < TILE_MISMATCH:
            log.warning("tiles of %.0f µm, the model was trained on %.0f µm tiles: predictions may be off", tile_um, self.tile_um)
        return self.ensemble.predict(x)

    def predict(self, adata: ad.AnnData) -> ad.AnnData:
        """New AnnData over the same spots (see :func:`prediction_to_anndata`)."""
        info = {"encoder": self.encoder, "tile_um": self.tile_um, "head": self.cfg.net.head,
                "members": len(self.ensemble.members), "n_genes": len(self.genes)}
        return prediction_to_anndata(self.predict_arrays(adata), adata, self.genes, info)


def prediction_to_anndata(pred: Prediction, adata: ad.AnnData, genes: list[str], info: dict[str, Any]) -> ad.AnnData:
    """Predicted log1p(CP10k) in ``X`` and ``layers["log1p"]``, aleatoric / epistemic variance in
    ``layers``; obs, obsm and the spatial / feature records of ``adata`` carried over."""
    out = ad.AnnData(X=pred.mean, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(list(genes), name="gene")))
    out.layers[keys.LOG1P] = pred.mean
    out.layers[keys.UNCERTAINTY_ALEATORIC] = pred.aleatoric
    out.layers[keys.UNCERTAINTY_EPISTEMIC] = pred.epistemic
    for k, v in adata.obsm.items():
        out.obsm[k] = v
    for k in (keys.SPATIAL, keys.FEATURES_UNS, keys.EMBEDDING_MODELS):
        if k in adata.uns:
            out.uns[k] = adata.uns[k]
    out.uns[keys.EXPRESSION_MODEL] = info
    return out
