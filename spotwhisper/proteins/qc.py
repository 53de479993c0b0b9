"""Per-marker QC of a virtual protein panel, as ROSIE assesses its channels.

For each marker on one slide:

* **dynamic range** — upper minus lower percentile (99th − 1st) of the raw levels; a marker
  whose range is below ``min_dynamic_range`` is flat on this slide and carries no contrast;
* **detected fraction** (route B only) — share of spots with any expression of the proxy genes;
  a marker seen in fewer than ``min_detected_fraction`` of spots is too sparse to map;
* **Wasserstein distance** — earth mover's distance between the slide's raw levels and a
  reference distribution of the same marker (e.g. the measured-expression levels, or the training
  slides), in the same raw units; above ``max_wasserstein`` the slide is flagged as shifted.

Markers without proxy or without any gene in the data are NaN and flagged as such.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from .. import keys
from .config import ProteinQCConfig

log = logging.getLogger(__name__)

Reference = ad.AnnData | np.ndarray | dict[str, np.ndarray] | None


def _reference_columns(reference: Reference, markers: Sequence[str]) -> list[np.ndarray | None]:
    """The reference values of each marker (``None`` where the reference lacks it)."""
    if reference is None:
        return [None] * len(markers)
    if isinstance(reference, ad.AnnData):
        ref_markers = list(reference.uns.get(keys.PROTEIN_MARKERS, []))
        key = keys.PROTEINS_RAW if keys.PROTEINS_RAW in reference.obsm else keys.PROTEINS
        if key not in reference.obsm or not ref_markers:
            raise KeyError(f"reference AnnData has no obsm[{keys.PROTEINS_RAW!r}] with uns[{keys.PROTEIN_MARKERS!r}]")
        values = np.asarray(reference.obsm[key])
        reference = {m: values[:, i] for i, m in enumerate(ref_markers)}
    if isinstance(reference, np.ndarray):
        if reference.ndim != 2 or reference.shape[1] != len(markers):
            raise ValueError(f"reference array must be (n, {len(markers)}) in panel order, got {reference.shape}")
        return [reference[:, j] for j in range(len(markers))]
    return [np.asarray(reference[m], dtype=float) if m in reference else None for m in markers]


def marker_qc(
    values: np.ndarray,
    markers: Sequence[str],
    reference: Reference = None,
    cfg: ProteinQCConfig | None = None,
    detection: bool = True,
) -> pd.DataFrame:
    """QC table, one row per marker, from raw levels ``values`` ``(n_spots, n_markers)``.

    Columns: ``marker``, ``n_valid``, ``lower``/``upper`` (percentiles), ``dynamic_range``,
    ``detected_fraction`` (values > 0; NaN unless ``detection``), ``wasserstein`` (NaN without
    reference), ``informative`` (not NaN, not flat, not too sparse), ``matches_reference`` and
    ``reason`` (why a marker is flagged; empty when it passes).
    """
    cfg = cfg or ProteinQCConfig()
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(markers):
        raise ValueError(f"values must be (n_spots, {len(markers)}), got {values.shape}")
    refs = _reference_columns(reference, markers)
    lo_q, hi_q = cfg.percentiles
    rows = []
    for j, m in enumerate(markers):
        v = values[:, j]
        v = v[np.isfinite(v)]
        row: dict[str, object] = {"marker": m, "n_valid": int(v.size)}
        reasons = []
        if v.size == 0:
            row.update(lower=np.nan, upper=np.nan, dynamic_range=np.nan, detected_fraction=np.nan, wasserstein=np.nan)
            reasons.append("no values (no proxy or no gene in the data)")
        else:
            lo, hi = np.percentile(v, [lo_q, hi_q])
            det = float((v > 0).mean()) if detection else np.nan
            ref = refs[j]
            ref = ref[np.isfinite(ref)] if ref is not None else None
            wd = float(wasserstein_distance(v, ref)) if ref is not None and ref.size else np.nan
            row.update(
                lower=float(lo), upper=float(hi), dynamic_range=float(hi - lo), detected_fraction=det, wasserstein=wd
            )
            if hi - lo < cfg.min_dynamic_range:
                reasons.append(f"flat: dynamic range {hi - lo:.3g} < {cfg.min_dynamic_range:g}")
            if detection and det < cfg.min_detected_fraction:
                reasons.append(f"sparse: detected in {det:.1%} of spots < {cfg.min_detected_fraction:.0%}")
        informative = not reasons
        wd = row["wasserstein"]
        matches = bool(np.isnan(wd) or wd <= cfg.max_wasserstein)  # type: ignore[arg-type]
        if not matches:
            reasons.append(f"shifted: Wasserstein distance {wd:.3g} to the reference > {cfg.max_wasserstein:g}")
        row.update(informative=informative, matches_reference=matches, reason="; ".join(reasons))
        rows.append(row)
    return pd.DataFrame(rows)


def protein_qc(
    adata: ad.AnnData,
    reference: Reference = None,
    cfg: ProteinQCConfig | None = None,
) -> pd.DataFrame:
    """QC of ``adata``'s panel (``obsm["proteins_raw"]``, else ``obsm["proteins"]``); stores it in ``uns["protein_qc"]``.

    ``reference``: an AnnData with its own panel, a ``(m, 50)`` array in panel order, or a dict
    marker → values, in the same raw units. Detection is checked for route B only.
    Returns the table of :func:`marker_qc`.
    """
    key = keys.PROTEINS_RAW if keys.PROTEINS_RAW in adata.obsm else keys.PROTEINS
    if key not in adata.obsm or keys.PROTEIN_MARKERS not in adata.uns:
        raise KeyError(f"no protein panel in the AnnData: run a protein route first (obsm[{keys.PROTEINS!r}] missing)")
    markers = list(adata.uns[keys.PROTEIN_MARKERS])
    route = adata.uns.get(keys.PROTEIN_INFO, {}).get("route", "expression")
    table = marker_qc(np.asarray(adata.obsm[key]), markers, reference, cfg, detection=route == "expression")
    adata.uns[keys.PROTEIN_QC] = {c: table[c].tolist() for c in table.columns}
    flagged = table.loc[~table["informative"], "marker"].tolist()
    log.info(
        "protein QC: %d of %d markers informative; not informative: %s", len(table) - len(flagged), len(table), flagged
    )
    return table


def qc_table(adata: ad.AnnData) -> pd.DataFrame:
    """The QC table stored by :func:`protein_qc` (``uns["protein_qc"]``) as a DataFrame."""
    if keys.PROTEIN_QC not in adata.uns:
        raise KeyError(f"no uns[{keys.PROTEIN_QC!r}]: run protein_qc first")
    return pd.DataFrame({k: list(v) for k, v in adata.uns[keys.PROTEIN_QC].items()})
