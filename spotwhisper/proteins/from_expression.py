"""Route B: virtual protein levels from (inferred or measured) expression through the gene map.

For each marker with a fair proxy, the raw level of a spot is the weighted mean of the log1p
expression (counts per 10k) of the marker's genes that are present in the data (an official
symbol's older alias counts when the symbol itself is absent). Raw levels are in log1p units
and differ in scale between markers, so they are then made comparable:

* ``minmax`` (default) — per slide, ``(v − p_lo) / (p_hi − p_lo)`` clipped to [0, 1], with
  ``p_lo``/``p_hi`` robust percentiles (1st/99th); a marker that is flat on the slide gets 0.
* ``rank`` — per slide, the spot's rank scaled to [0, 1] (ties share their mean rank).
* ``none`` — raw levels.

Markers without a fair proxy (DAPI, CD45RO) are NaN and listed in ``uns["protein_panel"]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

from .. import keys
from ..genes import TARGET_SUM, looks_like_counts
from .config import ExpressionRouteConfig
from .panel import ProteinPanel, ProteinPanelError, load_protein_panel
from .scaling import scale_levels

log = logging.getLogger(__name__)


@dataclass
class MarkerLevels:
    """Raw route-B levels ``raw`` ``(n_spots, n_markers)`` (log1p units, NaN = no proxy / no gene),
    the genes used per marker (``genes_used[j]``, symbols as named in the data), the markers that
    have a proxy but no gene in the data (``missing``) and the expression input used (``source``)."""

    raw: np.ndarray
    genes_used: list[list[str]]
    markers: list[str]
    missing: list[str]
    source: str


def expression_for_proxies(
    adata: ad.AnnData, layer: str | None = None, integer_check_values: int = 10000
) -> tuple[ad.AnnData, str]:
    """A view of ``adata`` as log1p expression (genes as ``var_names``) and a note on where it came from.

    ``layer`` names the layer to use; by default ``layers["log1p"]`` when present, else ``X``.
    Raw counts (integer-valued ``X``) are normalised with scanpy ``normalize_total(target_sum=1e4)``
    and ``log1p`` — on a copy, ``adata`` is not changed.
    """
    import scanpy as sc

    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"no layer {layer!r} in the AnnData (layers: {list(adata.layers)})")
        return ad.AnnData(X=adata.layers[layer], obs=adata.obs[[]], var=adata.var[[]]), f"layers[{layer!r}]"
    if keys.LOG1P in adata.layers:
        return ad.AnnData(X=adata.layers[keys.LOG1P], obs=adata.obs[[]], var=adata.var[[]]), f"layers[{keys.LOG1P!r}]"
    if looks_like_counts(adata.X, integer_check_values):
        log.warning(
            "X holds raw counts (integer values): normalising with scanpy normalize_total(target_sum=%g) + log1p",
            TARGET_SUM,
        )
        tmp = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[]], var=adata.var[[]])
        sc.pp.normalize_total(tmp, target_sum=TARGET_SUM)
        sc.pp.log1p(tmp)
        return tmp, f"X (raw counts → normalize_total(target_sum={TARGET_SUM:g}) + log1p)"
    X = adata.X
    xmin = X.min() if sparse.issparse(X) else np.nanmin(X)
    if xmin < 0:
        log.warning("X has negative values (%.3g): expected log1p-normalised expression, not scaled data", xmin)
    return ad.AnnData(X=X, obs=adata.obs[[]], var=adata.var[[]]), "X (log1p expression)"


def _resolve_genes(marker_genes: tuple[str, ...], present: dict[str, int], panel: ProteinPanel) -> list[tuple[str, str]]:
    """``(official symbol, name in the data)`` for each gene of a marker found directly or by alias."""
    found = []
    for g in marker_genes:
        name = g if g in present else next((a for a in panel.gene_aliases.get(g, ()) if a in present), None)
        if name is not None:
            found.append((g, name))
    return found


def marker_levels(
    adata: ad.AnnData,
    panel: ProteinPanel | None = None,
    cfg: ExpressionRouteConfig | None = None,
) -> MarkerLevels:
    """Raw route-B level of every marker: weighted mean log1p expression of its genes, ``(n, 50)``.

    Raises :class:`ProteinPanelError` when fewer than ``cfg.min_overlap`` of the proxy markers
    have a gene in the data; logs a warning for each proxy marker with no gene present.
    """
    panel = panel or load_protein_panel()
    cfg = cfg or ExpressionRouteConfig()
    expr, source = expression_for_proxies(adata, cfg.layer, cfg.integer_check_values)
    present = {g: i for i, g in enumerate(map(str, expr.var_names))}
    resolved = [_resolve_genes(m.genes, present, panel) for m in panel.markers]
    used = [[name for _, name in pairs] for pairs in resolved]
    with_proxy = [m for m in panel.markers if m.has_proxy]
    covered = sum(1 for m, g in zip(panel.markers, used) if m.has_proxy and g)
    if covered < cfg.min_overlap * len(with_proxy):
        example = [g for m in with_proxy[:8] for g in m.genes][:10]
        raise ProteinPanelError(
            f"only {covered} of {len(with_proxy)} proxy markers have a gene in the data "
            f"(need ≥ {cfg.min_overlap:.0%}); {adata.n_vars} genes such as {list(expr.var_names[:5])}, "
            f"the map expects symbols such as {example}. Are genes human symbols (not Ensembl ids)?"
        )
    missing = [m.name for m, g in zip(panel.markers, used) if m.has_proxy and not g]
    for name in missing:
        log.warning("protein %s: none of its genes %s is in the data; its level is NaN", name, list(panel[name].genes))

    cols = sorted({present[g] for genes in used for g in genes})
    sub = expr.X[:, cols]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    sub = sub.astype(np.float64)
    col_of = {c: k for k, c in enumerate(cols)}
    raw = np.full((adata.n_obs, len(panel)), np.nan, dtype=np.float32)
    markers = tqdm(list(zip(panel.markers, resolved)), desc="protein levels", leave=False, disable=None)
    for j, (m, pairs) in enumerate(markers):
        if not pairs:
            continue
        w = np.array([m.weight(official) for official, _ in pairs])
        raw[:, j] = sub[:, [col_of[present[name]] for _, name in pairs]] @ (w / w.sum())
    return MarkerLevels(raw=raw, genes_used=used, markers=panel.names, missing=missing, source=source)


def proteins_from_expression(
    adata: ad.AnnData,
    panel: ProteinPanel | None = None,
    cfg: ExpressionRouteConfig | None = None,
) -> ad.AnnData:
    """Route B on ``adata`` (log1p or raw-count expression, measured or inferred), in place.

    Writes ``obsm["proteins"]`` (scaled, ``(n, 50)`` float32, ROSIE order), ``obsm["proteins_raw"]``
    (log1p units), ``uns["protein_markers"]`` and ``uns["protein_panel"]`` (route, scaling, genes
    used per marker as ``";"``-joined strings, markers without proxy / without genes). Returns ``adata``.
    """
    panel = panel or load_protein_panel()
    cfg = cfg or ExpressionRouteConfig()
    levels = marker_levels(adata, panel, cfg)
    groups = None
    if cfg.groupby is not None and cfg.groupby in adata.obs:
        groups = adata.obs[cfg.groupby].astype(str).to_numpy()
    elif cfg.groupby is not None:
        log.info("no obs[%r]: scaling all %d spots together", cfg.groupby, adata.n_obs)
    adata.obsm[keys.PROTEINS] = scale_levels(levels.raw, cfg.scaling, cfg.clip_percentiles, groups)
    adata.obsm[keys.PROTEINS_RAW] = levels.raw
    adata.uns[keys.PROTEIN_MARKERS] = list(panel.names)
    adata.uns[keys.PROTEIN_INFO] = {
        "route": "expression",
        "input": levels.source,
        "scaling": cfg.scaling,
        "clip_percentiles": list(cfg.clip_percentiles),
        "groupby": cfg.groupby or "",
        "genes_used": [";".join(g) for g in levels.genes_used],
        "no_proxy": panel.without_proxy,
        "no_gene_in_data": levels.missing,
    }
    log.info(
        "route B: %d markers from %s; no proxy %s; no gene in data %s",
        len(panel) - len(panel.without_proxy) - len(levels.missing),
        levels.source,
        panel.without_proxy,
        levels.missing,
    )
    return adata
