"""Route B (virtual proteins from expression) on her2st: biology checks, QC, inferred-vs-measured.

1. Measured expression of every section → route B → Pearson (across spots) of marker proxies with
   the stereoscope cell-type proportions they should follow (PanCK ↔ Epithelial, CD3e ↔ T-cells …).
2. QC: how often each marker is flagged not informative over the sections.
3. With --inferred PRED.h5ad (inferred expression, e.g. leave-one-section-out predictions, spots
   named like the her2st reader names them): per-marker Pearson of route B from inferred vs
   measured expression, mean ± SEM over sections.

    python benchmarks/proteins_route_b.py --data-dir ../shared/data [--sections C1 C2] [--inferred PRED.h5ad]
    python benchmarks/proteins_route_b.py --data-dir ../shared/data --sections C2 C3 C4 C5 C6 --oof
"""

from __future__ import annotations

import argparse
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd

from spotwhisper.io import list_sections, read_h5ad, read_her2st
from spotwhisper.proteins import compare_routes, protein_qc, proteins_from_expression

#: marker proxy → cell type(s) whose stereoscope proportion it should follow
EXPECTED = {
    "PanCK": ["Epithelial"],
    "EpCAM": ["Epithelial"],
    "ECad": ["Epithelial"],
    "Keratin8/18": ["Epithelial"],
    "CD45": ["T-cells", "B-cells", "Myeloid", "Plasma Cells"],
    "CD3e": ["T-cells"],
    "CD8": ["T-cells"],
    "CD20": ["B-cells"],
    "CD79a": ["B-cells", "Plasma Cells"],
    "CD38": ["Plasma Cells"],
    "CD68": ["Myeloid"],
    "CD163": ["Myeloid"],
    "CD14": ["Myeloid"],
    "CD31": ["Endothelial"],
    "CD34": ["Endothelial"],
    "aSMA": ["PVL", "CAFs"],
    "Podoplanin": ["CAFs"],
    "Vimentin": ["CAFs", "Endothelial", "PVL", "Myeloid", "T-cells"],
}


def biology_table(adatas: dict[str, ad.AnnData]) -> pd.DataFrame:
    rows = []
    for section, a in adatas.items():
        markers = list(a.uns["protein_markers"])
        raw = pd.DataFrame(a.obsm["proteins_raw"], columns=markers, index=a.obs_names)
        for marker, types in EXPECTED.items():
            cols = [f"deconv_{t}" for t in types if f"deconv_{t}" in a.obs]
            if len(cols) != len(types) or raw[marker].isna().all() or raw[marker].std() == 0:
                continue
            target = a.obs[cols].sum(axis=1).to_numpy(dtype=float)
            ok = np.isfinite(target)
            rows.append({"section": section, "marker": marker, "cell types": "+".join(types),
                         "pearson": float(np.corrcoef(raw[marker][ok], target[ok])[0, 1])})  # fmt: skip
    t = pd.DataFrame(rows)
    g = t.groupby(["marker", "cell types"], sort=False)["pearson"]
    return pd.DataFrame(
        {"mean": g.mean(), "sem": g.sem(), "positive": g.apply(lambda x: (x > 0).mean()), "n": g.count()}
    ).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sections", nargs="*", default=None)
    ap.add_argument("--inferred", default=None, help=".h5ad of inferred expression to compare with measured")
    ap.add_argument("--oof", action="store_true",
                    help="compare with out-of-fold inferred expression of the sections with H&E (trains the "
                         "leave-one-section-out ensembles on first use; cached)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    sections = args.sections or list_sections(args.data_dir)
    adatas = {}
    for s in sections:
        a = read_her2st(args.data_dir, s, with_image=False)
        proteins_from_expression(a)
        protein_qc(a)
        adatas[s] = a
    pd.set_option("display.width", 160)
    print(
        f"## Route B from measured expression, {len(sections)} sections, {sum(a.n_obs for a in adatas.values())} spots\n"
    )
    print(
        "Pearson (across spots, per section) of the marker proxy with stereoscope proportions; mean ± SEM over sections"
    )
    print(biology_table(adatas).round(3).to_string(index=False))
    qc = pd.concat([pd.DataFrame(a.uns["protein_qc"]).assign(section=s) for s, a in adatas.items()])
    flags = qc.groupby("marker", sort=False).agg(
        not_informative=("informative", lambda x: int((~x.astype(bool)).sum())),
        median_dynamic_range=("dynamic_range", "median"),
        median_detected=("detected_fraction", "median"),
    )
    print(f"\nQC over {len(sections)} sections: how often each marker is not informative")
    print(flags.round(3).to_string())
    if args.inferred or args.oof:
        if args.oof:
            from spotwhisper.config import load_config
            from spotwhisper.expression.config import ExpressionConfig
            from spotwhisper.expression.workflow import oof_expression

            oof = oof_expression(args.data_dir, load_config(ExpressionConfig, "expression"), progress=False)
            inferred = ad.concat([oof[s] for s in sections if s in oof])
        else:
            inferred = read_h5ad(args.inferred)
        measured = ad.concat(list(adatas.values()), join="outer", fill_value=0)
        table = compare_routes(inferred, measured)
        print("\n## Route B: inferred vs measured expression (Pearson across spots per section)")
        print(table.round(3).to_string(index=False))
        print(f"\nmean over markers with a value: {table['pearson_mean'].mean():.3f}")


if __name__ == "__main__":
    main()
