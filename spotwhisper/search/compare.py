"""Compare two queries on a slide: where A matches, where B matches, where both do — and what separates them.

"compare tumour and stroma" is not "tumour minus stroma" (that is one contrast map, made by the
engine). Here each query is searched on its own with :meth:`SearchEngine.search`; a spot is a
match of a query when it lies in one of that query's regions (the connected groups of spots at or
above the result's own threshold, so the comparison follows whatever calibration the engine uses).
Every spot gets a class — 0 neither, 1 only A, 2 only B, 3 both — with areas in mm² and as a share of
the tissue (the slide's spots), and the genes and proteins that differ between the only-A and
only-B spots (Welch t, as in :mod:`.explain`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..genes import expression_matrix
from .. import keys
from ..io.spatial import spot_spacing
from .explain import Explanation, contrast_table, explain_spots

NEITHER, ONLY_A, ONLY_B, BOTH = 0, 1, 2, 3
CLASS_NAMES = {ONLY_A: "only A", ONLY_B: "only B", BOTH: "both"}


@dataclass
class Comparison:
    """Two queries on one slide: per-spot ``classes`` ``(n,)`` and what separates A from B."""

    slide: str
    query_a: str
    query_b: str
    classes: np.ndarray
    spot_area_mm2: float  #: area one spot stands for (spot spacing squared)
    separating: Explanation | None  #: only-A spots (inside) versus only-B spots; None when either is empty
    notes: list[str]

    def count(self, cls: int) -> int:
        return int((self.classes == cls).sum())

    def area_mm2(self, cls: int) -> float:
        return self.count(cls) * self.spot_area_mm2

    def share(self, cls: int) -> float:
        """Percent of the slide's spots (its tissue) in class ``cls``."""
        return 100.0 * self.count(cls) / max(len(self.classes), 1)

    def legend(self) -> list[dict]:
        """One row per class: label, spots, mm², % of tissue."""
        names = {ONLY_A: f"A: {self.query_a}", ONLY_B: f"B: {self.query_b}", BOTH: "both"}
        return [{"class": c, "label": names[c], "spots": self.count(c), "area_mm2": round(self.area_mm2(c), 3),
                 "percent_tissue": round(self.share(c), 1)} for c in (ONLY_A, ONLY_B, BOTH)]

    def summary(self, n: int = 5) -> str:
        """The comparison in sentences with numbers."""
        parts = [f"{r['label']} {r['spots']} spots ({r['area_mm2']:.2f} mm², {r['percent_tissue']:.0f}% of the tissue)"
                 for r in self.legend()]
        text = f"Compared on {self.slide}: " + "; ".join(parts) + "."
        sep = self.separating
        if sep is not None:
            for side, table_sign in (("A", 1), ("B", -1)):
                genes = _side(sep.genes, table_sign, n)
                prots = _side(sep.proteins, table_sign, n) if sep.proteins is not None else ""
                what = "; ".join(p for p in (genes, f"proteins {prots}" if prots else "") if p)
                if what:
                    other = "B" if side == "A" else "A"
                    text += f"\nHigher in {side} than in {other}: {what}."
        text += "".join(f"\n{note}" for note in self.notes)
        return text


def _side(table, sign: int, n: int) -> str:
    if table is None or table.empty:
        return ""
    rows = table[table["diff"] * sign > 0].sort_values("diff", ascending=sign < 0).head(n)
    return ", ".join(f"{name} ({'+' if sign > 0 else '-'}{abs(d):.2f})" for name, d in zip(rows["name"], rows["diff"]))


def region_mask(hits) -> np.ndarray:
    """Spots of a :class:`~spotwhisper.search.engine.SlideHits` that lie in one of its regions."""
    mask = np.zeros(hits.adata.n_obs, dtype=bool)
    for r in hits.regions:
        mask[np.asarray(r.spots)] = True
    return mask


def spot_area_mm2(adata) -> float:
    """Area one spot stands for: (spot spacing in µm)² in mm² (0 when µm/px is unknown)."""
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    mpp = float(adata.uns[keys.SPATIAL][lib]["scalefactors"].get(keys.MPP, 0.0)) if lib else 0.0
    return (spot_spacing(adata) * mpp) ** 2 / 1e6


def classify(mask_a: np.ndarray, mask_b: np.ndarray) -> np.ndarray:
    """Per-spot class from two boolean masks: 0 neither, 1 only A, 2 only B, 3 both."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    return (a & ~b) * ONLY_A + (b & ~a) * ONLY_B + (a & b) * BOTH


def separating_features(adata, only_a: np.ndarray, only_b: np.ndarray, top: int = 10) -> Explanation | None:
    """Genes and proteins of the only-A spots versus the only-B spots (``diff`` > 0: higher in A)."""
    if not only_a.any() or not only_b.any():
        return None
    keep = only_a | only_b
    x = expression_matrix(adata)
    x = x[keep]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
    prot = np.asarray(adata.obsm[keys.PROTEINS])[keep] if keys.PROTEINS in adata.obsm else None
    markers = [str(m) for m in adata.uns.get(keys.PROTEIN_MARKERS, [])] or None
    expl = explain_spots(only_a[keep], x, list(adata.var_names), top=top)
    if prot is not None and markers is not None:  # both sides (explain_spots keeps the up side of proteins)
        expl.proteins = contrast_table(prot, markers, only_a[keep])
    return expl


def compare_queries(engine, query_a: str, query_b: str, slide: str, threshold: float | None = None,
                    weights: dict[str, float] | None = None) -> tuple[Comparison, object, object]:
    """Search ``query_a`` and ``query_b`` on ``slide`` and compare them → ``(comparison, result A, result B)``.

    Matches are the spots in each result's regions at its threshold (``threshold`` passes one to
    both searches; default the engine's)."""
    res_a = engine.search(query_a, slides=[slide], weights=weights, threshold=threshold, explain=False)
    res_b = engine.search(query_b, slides=[slide], weights=weights, threshold=threshold, explain=False)
    hits_a, hits_b = res_a.slides[0], res_b.slides[0]
    ma, mb = region_mask(hits_a), region_mask(hits_b)
    classes = classify(ma, mb)
    notes = []
    for q, hits, res in ((query_a, hits_a, res_a), (query_b, hits_b, res_b)):
        if not hits.regions:
            notes.append(f"'{q}': {hits.no_region_reason(res.threshold)}.")
    if not ma.any() or not mb.any():
        notes.append("With one side empty nothing separates them; lower the threshold or rephrase.")
    sep = separating_features(hits_a.adata, classes == ONLY_A, classes == ONLY_B, engine.cfg.top_genes)
    comp = Comparison(slide, query_a, query_b, classes, spot_area_mm2(hits_a.adata), sep, notes)
    return comp, res_a, res_b
