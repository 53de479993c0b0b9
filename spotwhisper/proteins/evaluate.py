"""How well route B survives inferred expression: proxies from inferred vs measured expression.

Both AnnData go through the same gene map (by default restricted to the genes both hold, so a
marker is built from the same genes on each side); per section and marker the Pearson and
Spearman correlations across spots are computed on the raw levels, then summarised over
sections (mean, SEM). With predictions made leave-one-section-out, every section's figure is
a held-out figure.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

from .. import keys
from .config import ExpressionRouteConfig
from .from_expression import marker_levels
from .panel import ProteinPanel, load_protein_panel

log = logging.getLogger(__name__)


def _correlate(a: np.ndarray, b: np.ndarray, min_spots: int) -> tuple[float, float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < min_spots or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return np.nan, np.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(pearsonr(a[ok], b[ok])[0]), float(spearmanr(a[ok], b[ok])[0]), n


def _aligned(inferred: ad.AnnData, measured: ad.AnnData, common_genes: bool) -> tuple[ad.AnnData, ad.AnnData]:
    spots = inferred.obs_names.intersection(measured.obs_names, sort=False)
    if len(spots) < 0.5 * inferred.n_obs:
        raise ValueError(
            f"only {len(spots)} of {inferred.n_obs} inferred spots are in the measured AnnData "
            f"(obs names such as {list(inferred.obs_names[:3])} vs {list(measured.obs_names[:3])})"
        )
    inf, mea = inferred[spots], measured[spots]
    if common_genes:
        genes = inf.var_names.intersection(mea.var_names, sort=False)
        if len(genes) == 0:
            raise ValueError("inferred and measured AnnData share no gene name")
        inf, mea = inf[:, genes], mea[:, genes]
    return inf, mea


def per_section_correlations(
    inferred: ad.AnnData,
    measured: ad.AnnData,
    panel: ProteinPanel | None = None,
    cfg: ExpressionRouteConfig | None = None,
    measured_cfg: ExpressionRouteConfig | None = None,
    groupby: str = keys.SECTION,
    common_genes: bool = True,
    min_spots: int = 10,
) -> pd.DataFrame:
    """Long table: one row per section and marker with ``pearson``, ``spearman``, ``n_spots`` and ``genes``.

    Spots are matched by ``obs_names``; ``cfg``/``measured_cfg`` choose the expression layer of
    each side (default: ``layers["log1p"]``, else ``X``, raw counts normalised). Sections come
    from ``obs[groupby]`` of the measured AnnData (one group when absent).
    """
    panel = panel or load_protein_panel()
    inf, mea = _aligned(inferred, measured, common_genes)
    li = marker_levels(inf, panel, cfg)
    lm = marker_levels(mea, panel, measured_cfg or cfg)
    groups = mea.obs[groupby].astype(str).to_numpy() if groupby in mea.obs else np.full(mea.n_obs, "all")
    rows = []
    for section in pd.unique(groups):
        sel = groups == section
        for j, m in enumerate(panel.markers):
            r, rho, n = _correlate(li.raw[sel, j], lm.raw[sel, j], min_spots)
            genes = sorted(set(li.genes_used[j]) & set(lm.genes_used[j]))
            rows.append(
                {"section": section, "marker": m.name, "has_proxy": m.has_proxy, "genes": ";".join(genes),
                 "pearson": r, "spearman": rho, "n_spots": n}
            )  # fmt: skip
    return pd.DataFrame(rows)


def summarize(per_section: pd.DataFrame) -> pd.DataFrame:
    """Per-marker summary of :func:`per_section_correlations`: mean, SEM and median over sections."""

    def sem(x: pd.Series) -> float:
        x = x.dropna()
        return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else np.nan

    g = per_section.groupby("marker", sort=False)
    out = pd.DataFrame(
        {
            "has_proxy": g["has_proxy"].first(),
            "genes": g["genes"].first(),
            "n_sections": g["pearson"].count(),
            "pearson_mean": g["pearson"].mean(),
            "pearson_sem": g["pearson"].agg(sem),
            "pearson_median": g["pearson"].median(),
            "spearman_mean": g["spearman"].mean(),
            "n_spots": g["n_spots"].sum(),
        }
    )
    return out.reset_index()


def compare_routes(inferred: ad.AnnData, measured: ad.AnnData, **options: Any) -> pd.DataFrame:
    """Per-marker table: route B from ``inferred`` vs route B from ``measured`` expression
    (``options`` as for :func:`per_section_correlations`: panel, cfg, measured_cfg, groupby …).

    Columns: ``marker``, ``has_proxy``, ``genes``, ``n_sections``, ``pearson_mean``,
    ``pearson_sem``, ``pearson_median``, ``spearman_mean``, ``n_spots``; rows in ROSIE order.
    Markers without a proxy or gene have NaN correlations.
    """
    table = per_section_correlations(inferred, measured, **options)
    summary = summarize(table)
    valid = summary["pearson_mean"].dropna()
    log.info("route B inferred vs measured: mean Pearson %.3f over %d markers", valid.mean(), len(valid))
    return summary
