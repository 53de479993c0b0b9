"""The gene panel every expression-level model shares (inferred expression, text encoder, proteins).

A shared module below every stage (see ``tests/test_import_direction.py``): the expression,
language and protein stages all read expression through this panel and its log1p normalisation.

The default panel (``spotwhisper/resources/gene_panel.txt``) is made by
``spotwhisper train panel``: highly variable genes of the training sections (scanpy, batch-aware
over sections) plus every gene the vocabulary and the protein map name, if measured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
from scipy import sparse

from . import keys
from .atomic import atomic_file

log = logging.getLogger(__name__)

DEFAULT_PANEL = Path(__file__).resolve().parent / "resources" / "gene_panel.txt"
#: layer holding log1p(counts per 10k); ``X`` keeps raw counts
TARGET_SUM = 1e4


@dataclass
class PanelConfig:
    """How the default panel is made (``configs/panel.yaml``)."""

    n_top_genes: int = 2000  #: batch-aware highly variable genes
    sections: list[str] | None = None  #: None = every section of the data directory
    min_extra_fraction: float = 0.5  #: extra genes must be detected in this fraction of sections
    extra_genes: list[str] = field(default_factory=list)  #: always added when detected


class PanelMismatchError(ValueError):
    """Too few panel genes are present in the data."""


#: non-zero entries inspected to tell raw counts from log1p values (:func:`looks_like_counts`)
COUNTS_CHECK_VALUES = 10_000


def looks_like_counts(x, n_values: int = COUNTS_CHECK_VALUES) -> bool:
    """True when the first ``n_values`` non-zero entries of ``x`` (dense or sparse, ``(n, G)``) are all
    non-negative integers, i.e. raw counts rather than log1p / normalised values; False when there are none."""
    if x is None:
        return False
    vals = x.data if sparse.issparse(x) else np.asarray(x).ravel()
    vals = vals[vals != 0][:n_values]
    return bool(vals.size) and bool(np.all(vals >= 0)) and bool(np.allclose(vals, np.round(vals)))


def expression_matrix(adata: ad.AnnData):
    """The expression a stage reads: ``layers["log1p"]`` when present, else ``X`` ``(n, G)`` (dense or sparse)."""
    return adata.layers[keys.LOG1P] if keys.LOG1P in adata.layers else adata.X


def log1p_normalize(adata: ad.AnnData, layer: str = keys.LOG1P) -> ad.AnnData:
    """Add ``layers[layer]`` = log1p(counts per 10k) (scanpy ``normalize_total`` + ``log1p``); returns ``adata``."""
    if layer in adata.layers:
        return adata
    tmp = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[]], var=adata.var[[]])
    sc.pp.normalize_total(tmp, target_sum=TARGET_SUM)
    sc.pp.log1p(tmp)
    adata.layers[layer] = tmp.X
    return adata


def build_gene_panel(
    adatas: Sequence[ad.AnnData],
    n_top_genes: int = 2000,
    extra_genes: Iterable[str] = (),
    batch_key: str = keys.SECTION,
    min_extra_fraction: float = 0.5,
) -> list[str]:
    """Highly variable genes over ``adatas`` (genes measured in all of them) plus ``extra_genes``.

    HVGs use scanpy's ``seurat`` flavour on log1p-normalised data, batch-aware over ``batch_key``.
    Extra genes are kept if detected in at least ``min_extra_fraction`` of the sections (a gene
    missing from a section's counts file had no count there). Order: HVGs by dispersion, then extras.
    """
    joined = ad.concat([a[:, :] for a in adatas], join="inner")
    if joined.n_vars == 0:
        raise PanelMismatchError("the sections share no gene")
    norm = ad.AnnData(X=joined.X.copy(), obs=joined.obs[[batch_key]], var=joined.var[[]])
    sc.pp.normalize_total(norm, target_sum=TARGET_SUM)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, n_top_genes=n_top_genes, batch_key=batch_key, flavor="seurat")
    var = norm.var
    order = var[var["highly_variable"]].sort_values("dispersions_norm", ascending=False).index.tolist()
    detected: dict[str, int] = {}
    for a in adatas:
        for g in a.var_names:
            detected[g] = detected.get(g, 0) + 1
    need = min_extra_fraction * len(adatas)
    hvg = set(order)
    extras = [g for g in dict.fromkeys(extra_genes) if detected.get(g, 0) >= need and g not in hvg]
    dropped = sorted(g for g in set(extra_genes) if detected.get(g, 0) < need)
    if dropped:
        log.info("panel: %d requested genes detected in too few sections: %s", len(dropped), dropped[:20])
    return order + extras


def save_panel(genes: Sequence[str], path: str | Path = DEFAULT_PANEL, header: str = "") -> Path:
    """Write one gene per line (``#`` comment lines for provenance)."""
    p = Path(path)
    lines = [f"# {h}" for h in header.splitlines() if h] + list(genes)
    with atomic_file(p) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return p


def load_panel(path: str | Path | None = None) -> list[str]:
    """Read a panel file (default: the shipped default panel)."""
    p = Path(path) if path is not None else DEFAULT_PANEL
    if not p.exists():
        raise FileNotFoundError(f"{p}: gene panel file missing (make it with `spotwhisper train panel`)")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def panel_matrix(
    adata: ad.AnnData,
    genes: Sequence[str],
    layer: str | None = keys.LOG1P,
    min_overlap: float = 0.8,
    fill_value: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(n_spots, len(genes))`` float32 matrix of ``genes`` in panel order, and a found-mask.

    Genes are matched by symbol; absent genes are filled with ``fill_value``. Raises
    :class:`PanelMismatchError` when less than ``min_overlap`` of the panel is present.
    """
    index = {g: i for i, g in enumerate(adata.var_names)}
    found = np.array([g in index for g in genes])
    frac = found.mean() if len(genes) else 0.0
    if frac < min_overlap:
        raise PanelMismatchError(
            f"only {found.sum()} of {len(genes)} panel genes ({frac:.0%}) are in the data "
            f"(need ≥ {min_overlap:.0%}); missing e.g. {[g for g, f in zip(genes, found) if not f][:10]}. "
            "Are the gene names symbols (not Ensembl ids) of the same species?"
        )
    src = adata.layers[layer] if layer else adata.X
    cols = [index[g] for g, f in zip(genes, found) if f]
    sub = src[:, cols]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    out = np.full((adata.n_obs, len(genes)), fill_value, dtype=np.float32)
    out[:, found] = sub
    if not found.all():
        log.warning("panel: %d of %d genes absent, filled with %s", (~found).sum(), len(genes), fill_value)
    return out, found
