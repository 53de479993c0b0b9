"""Training data, leave-one-section-out evaluation and out-of-fold embeddings of the aligned head."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..cache import cache_dir, cache_key, code_fingerprint
from ..config import to_dict
from ..encoders import create_encoder, extract_features
from ..io import read_her2st, sections_fingerprint
from ..language import TextExpressionModel
from ..setmodel import SpotInputs, inputs_for
from ..tiles.views import section_views
from .aligned import AlignedConfig, AlignedImageModel, fit_aligned

log = logging.getLogger(__name__)

#: code whose change changes the out-of-fold embeddings (part of their cache key)
OOF_CODE = ("spotwhisper.imagetext.aligned", "spotwhisper.imagetext.train", "spotwhisper.setmodel",
            "spotwhisper.io.her2st", "spotwhisper.tiles.views")


Pairs = dict[str, tuple[SpotInputs, np.ndarray]]


def paired_sections(data_dir: str | Path | None, cfg: AlignedConfig, text_model: TextExpressionModel,
                    progress: bool = True) -> tuple[Pairs, dict[str, list[SpotInputs]]]:
    """Per section: image features (cached extraction) and the teacher embedding ``(n, D)`` of the
    measured transcriptome by ``text_model``; and the features of its augmented copies (``cfg.augment``)."""
    encoder = create_encoder(cfg.encoder)
    out, copies = {}, {}
    for s in cfg.sections:
        adata = read_her2st(data_dir, s)
        feats = extract_features(adata.copy(), encoder, progress=progress)
        x = inputs_for(feats, cfg.encoder, cfg.net)
        out[s] = (x, text_model.encode_expression(adata))
        copies[s] = []
        for _, view, scale in section_views(data_dir, s, cfg.augment):
            v = extract_features(adata.copy(), encoder, slide=view, scale=scale, progress=progress)
            copies[s].append(inputs_for(v, cfg.encoder, cfg.net))
    return out, copies


def _cat(parts: list[tuple[SpotInputs, np.ndarray]]) -> tuple[SpotInputs, np.ndarray]:
    return SpotInputs.concat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def training_pairs(pairs: Pairs, copies: dict[str, list[SpotInputs]], sections: list[str]) -> tuple[SpotInputs, np.ndarray, int]:
    """Features and teachers of ``sections`` plus their augmented copies → ``(inputs, teacher, copies per spot)``."""
    rows = [pairs[s] for s in sections] + [(c, pairs[s][1]) for s in sections for c in copies.get(s, [])]
    x, t = _cat(rows)
    return x, t, len(rows) // max(1, len(sections))


def paired_recall_at_k(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Fraction of rows of ``a`` whose partner row of ``b`` is among its ``k`` most similar rows."""
    sim = a @ b.T
    rank = (sim > np.diag(sim)[:, None]).sum(1)
    return float((rank < k).mean())


def out_of_fold(pairs: Pairs, cfg: AlignedConfig, progress: bool = True,
                copies: dict[str, list[SpotInputs]] | None = None) -> dict[str, np.ndarray]:
    """Each section embedded by a head trained on the other sections (and their augmented copies)."""
    out = {}
    for held in pairs:
        x, t, k = training_pairs(pairs, copies or {}, [s for s in pairs if s != held])
        out[held] = fit_aligned(x, t, cfg, progress, copies=k).embed(pairs[held][0])
    return out


def evaluate_oof(pairs: dict[str, tuple[SpotInputs, np.ndarray]], oof: dict[str, np.ndarray],
                 inferred: dict[str, np.ndarray] | None = None, k: int = 10) -> pd.DataFrame:
    """Per held-out section: cosine to the teacher and image→teacher recall@k, for the aligned head
    and (when given) the route through inferred expression."""
    rows = []
    for s, emb in oof.items():
        t = pairs[s][1]
        routes = {"aligned head": emb, **({"inferred expression": inferred[s]} if inferred else {})}
        for name, e in routes.items():
            rows.append({"section": s, "route": name, "cosine_to_measured": float((e * t).sum(1).mean()),
                         f"recall@{k}": paired_recall_at_k(e, t, k), "chance": k / len(t)})
    return pd.DataFrame(rows)


def train_aligned(data_dir: str | Path | None, cfg: AlignedConfig, text_model: TextExpressionModel,
                  evaluate: bool = True, inferred: dict[str, np.ndarray] | None = None, progress: bool = True
                  ) -> tuple[AlignedImageModel, pd.DataFrame | None]:
    """Optionally evaluate leave-one-section-out (out-of-fold embeddings are cached), then train on
    every section."""
    pairs, copies = paired_sections(data_dir, cfg, text_model, progress)
    table = None
    if evaluate:
        oof = oof_image_embeddings(data_dir, cfg, text_model, progress, pairs=(pairs, copies))
        table = evaluate_oof(pairs, oof, inferred)
    x, t, k = training_pairs(pairs, copies, list(pairs))
    metrics = table.groupby("route").mean(numeric_only=True).round(4).to_dict(orient="index") if table is not None else {}
    return AlignedImageModel(fit_aligned(x, t, cfg, progress, copies=k), cfg, text_model.fingerprint(), metrics), table


def oof_image_embeddings(data_dir: str | Path | None, cfg: AlignedConfig | None = None,
                         text_model: TextExpressionModel | None = None, progress: bool = True,
                         pairs: tuple[Pairs, dict[str, list[SpotInputs]]] | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold aligned-head embeddings ``(n, D)`` of ``cfg.sections`` (rows in ``read_her2st``
    order), cached on disk by config, text model, the content of the sections' files and the code
    (:data:`OOF_CODE`)."""
    from .aligned import load_aligned_config

    cfg = cfg or load_aligned_config()
    text_model = text_model or TextExpressionModel.from_pretrained()
    key = cache_key("oof-aligned", to_dict(cfg), text_model.fingerprint(), sections_fingerprint(data_dir, cfg.sections),
                    code_fingerprint(*OOF_CODE))
    path = cache_dir("oof") / f"aligned-{key}.npz"
    if path.exists():
        with np.load(path) as f:
            return {s: f[s] for s in cfg.sections}
    paired, copies = pairs or paired_sections(data_dir, cfg, text_model, progress)
    oof = out_of_fold(paired, cfg, progress, copies)
    with atomic_file(path, suffix=".part.npz") as tmp:
        np.savez(tmp, **oof)
    return oof
