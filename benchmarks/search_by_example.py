"""Search by example: how well a few spots of one class find the rest of that class.

For every labelled class — her2st expression clusters and dominant cell types (``configs/bench/
clusters.yaml``, ``celltypes.yaml``) on the H&E sections B4, C2–C6, and the ccRCC tertiary lymphoid
structures (``ccrcc/<S>/labels.csv``: ``TLS`` or ``T_agg`` in a_1, ``TLS`` in b_1) — an example of
``k`` spots is drawn from one section (a random spot of the class and its ``k − 1`` nearest spots of
the same class: a small region, as a pathologist would mark one) and searched with
``SearchEngine.search_like``. One-vs-rest AUROC of the fused relevance (and of each route) is taken

* within the section (the example's own spots left out), and
* on another patient's section (her2st: C2–C6 ↔ B4; ccRCC: a_1 ↔ b_1),

averaged over ``--repeats`` draws, beside the zero-shot text query of the class (the engine's fused
relevance for the class query) on the same spots.

Caveat printed with the figures: the shipped H&E models were trained on B4 and C2–C6, so on her2st
the transcriptome and aligned routes are in-sample; the pooled image vector route has no trained
part; the ccRCC slides are out of sample for every model.

    python benchmarks/search_by_example.py --data-dir ../shared/data [--repeats 10] [--out benchmarks/results/search_by_example.md]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score

HER2ST = ["B4", "C2", "C3", "C4", "C5", "C6"]
CCRCC = {"a_1": "TLS", "b_1": "TLS_2_cat"}  #: section → label column
TLS_VALUES = ("TLS", "T_agg")


def processed(spec: str, out: Path, data_dir: str, models) -> "object":
    """The slide through the pipeline, kept as ``out/<name>.h5ad`` (reused when present)."""
    from spotwhisper.io import read_h5ad, write_h5ad
    from spotwhisper.io.inputs import load_input
    from spotwhisper.pipeline import process_slide

    name = Path(spec).name
    path = out / f"{name}.h5ad"
    if path.is_file():
        return read_h5ad(path)
    adata = process_slide(load_input(spec, data_dir), models(), progress=False)
    write_h5ad(adata, path)
    return adata


def her2st_classes(adatas: dict, task_name: str) -> dict[str, np.ndarray]:
    from spotwhisper.bench.tasks import assign_classes, load_task, raw_labels

    task = load_task(task_name)
    return {s: assign_classes(raw_labels(a, task), task) for s, a in adatas.items()}


def ccrcc_classes(adatas: dict, data_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for s, col in CCRCC.items():
        labels = pd.read_csv(data_dir / "ccrcc" / s / "labels.csv", dtype=str).set_index("Barcode")[col]
        values = labels.reindex(adatas[s].obs["barcode"].astype(str).to_numpy()).fillna("").to_numpy()
        out[s] = np.where(np.isin(values, TLS_VALUES), "TLS", "other").astype(object)
    return out


def draw_example(xy: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A random spot of ``idx`` and its ``k − 1`` nearest spots of ``idx`` (spot centres ``xy``)."""
    _, nn = cKDTree(xy[idx]).query(xy[idx[rng.integers(len(idx))]], k=k)
    return idx[np.atleast_1d(nn)]


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    ok = np.isfinite(score)
    y, score = y[ok], score[ok]
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def run(engine, classes: dict[str, np.ndarray], pairs: dict[str, list[str]], queries: dict[str, str], ks, repeats: int,
        rng: np.random.Generator, task: str, min_spots: int = 20) -> list[dict]:
    """Rows (task, class, k, scope, route, auroc) over ``repeats`` examples per (source section, class)."""
    from spotwhisper import keys
    from spotwhisper.search.example import Example

    rows = []
    for source, targets in pairs.items():
        adata = engine.slide(source)
        xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
        for cls in sorted(set(classes[source]) - {""}):
            idx = np.flatnonzero(classes[source] == cls)
            if cls not in queries or len(idx) < min_spots:
                continue
            for k in ks:
                for _ in range(repeats):
                    ex = draw_example(xy, idx, k, rng)
                    for target in [source, *targets]:
                        y, ev = classes[target] == cls, classes[target] != ""
                        if target == source:
                            ev = ev.copy()
                            ev[ex] = False
                        if y[ev].sum() < 5 or (~y[ev]).sum() < 5:
                            continue
                        res = engine.search_like(Example(source, ex), slides=[target], explain=False)
                        hits = res.slides[0]
                        scope = "within" if target == source else "other patient"
                        for route, score in {"fused": hits.fused, **hits.calibrated}.items():
                            rows.append({"task": task, "class": cls, "k": k, "scope": scope, "route": route,
                                         "auroc": auroc(y[ev], np.asarray(score)[ev])})
    for target in {t for s, ts in pairs.items() for t in [s, *ts]}:  # the zero-shot text query, same spots
        ev = classes[target] != ""
        for cls, query in queries.items():
            y = classes[target] == cls
            if y[ev].sum() < 5 or (~y[ev]).sum() < 5:
                continue
            hits = engine.search(query, slides=[target], explain=False).slides[0]
            rows.append({"task": task, "class": cls, "k": 0, "scope": "text", "route": "fused",
                         "auroc": auroc(y[ev], hits.fused[ev])})
    return rows


def table(rows: pd.DataFrame) -> str:
    """Markdown: per task and class, fused AUROC (routes image_vec / transcriptome / image) within and on
    another patient's section for k = 3 and 10, beside the zero-shot text query."""
    def cell(sub: pd.DataFrame, scope: str, k: int) -> str:
        s = sub[(sub["scope"] == scope) & (sub["k"] == k)].groupby("route")["auroc"].mean()
        if "fused" not in s:
            return "–"
        parts = " / ".join(f"{s[r]:.2f}" if r in s else "–" for r in ("image_vec", "transcriptome", "image"))
        return f"**{s['fused']:.3f}** ({parts})"

    lines = ["| task | class | k | within section: fused (image_vec / transcriptome / image) | other patient's section: "
             "fused (image_vec / transcriptome / image) | zero-shot text query (fused) | examples |",
             "|---|---|---|---|---|---|---|"]
    for (task, cls), sub in rows.groupby(["task", "class"], sort=False):
        text = sub[sub["scope"] == "text"]["auroc"].mean()
        for k in sorted(set(sub["k"]) - {0}):
            n = int(((sub["k"] == k) & (sub["route"] == "fused") & (sub["scope"] == "within")).sum())
            lines.append(f"| {task} | {cls} | {k} | {cell(sub, 'within', k)} | {cell(sub, 'other patient', k)} | "
                         f"{text:.3f} | {n} |")
    overall = rows[rows["route"] == "fused"].groupby(["scope", "k"])["auroc"].mean()
    lines.append("")
    lines.append("Mean over all rows (fused): " + "; ".join(f"{scope} k={k}: {v:.3f}" if k else f"text query: {v:.3f}"
                                                           for (scope, k), v in overall.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding her2st/ and ccrcc/ (default $SPOTWHISPER_DATA_DIR)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="processed slides are kept here (default <cache>/bench_search_by_example)")
    p.add_argument("--repeats", type=int, default=10, help="examples drawn per (section, class, k)")
    p.add_argument("--k", type=int, nargs="+", default=[3, 10], help="spots per example")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    from spotwhisper.api.loaded import pipeline_models
    from spotwhisper.cache import cache_root
    from spotwhisper.collection import load_collection_config, model_fingerprint
    from spotwhisper.config import load_config
    from spotwhisper.datadir import resolve_data_dir
    from spotwhisper.pipeline import PipelineConfig
    from spotwhisper.search.engine import SearchEngine

    data = resolve_data_dir(args.data_dir)
    # keyed like a staged slide (models, configs, pipeline code): a change reprocesses
    key = model_fingerprint(load_config(PipelineConfig, "pipeline"), load_collection_config())
    work = args.work_dir or cache_root() / "bench_search_by_example" / key
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    slides = {s: processed(s, work, str(data), pipeline_models) for s in HER2ST}
    slides.update({s: processed(str(data / "ccrcc" / s), work, str(data), pipeline_models) for s in CCRCC})
    print(f"{len(slides)} slides processed or read in {time.perf_counter() - start:.0f} s")
    engine = SearchEngine(slides, text_model=pipeline_models().text)
    rng = np.random.default_rng(args.seed)
    her2st_pairs = {"B4": ["C2", "C3", "C4", "C5", "C6"], **{s: ["B4"] for s in HER2ST[1:]}}
    rows = []
    for task, queries in (("clusters", {"cancer": "invasive cancer", "immune": "immune infiltrate"}),
                          ("celltypes", {"epithelial": "epithelial cells", "immune": "immune cells",
                                         "stromal": "stromal cells"})):
        rows += run(engine, her2st_classes({s: slides[s] for s in HER2ST}, task), her2st_pairs, queries, args.k,
                    args.repeats, rng, task)
    rows += run(engine, ccrcc_classes(slides, data), {"b_1": ["a_1"], "a_1": ["b_1"]},
                {"TLS": "tertiary lymphoid structures"}, args.k, args.repeats, rng, "ccRCC TLS", min_spots=10)
    frame = pd.DataFrame(rows)
    text = table(frame)
    print(text)
    print(f"\n{args.repeats} examples per (section, class, k); {time.perf_counter() - start:.0f} s in all. The shipped H&E "
          "models were trained on B4 and C2–C6 (her2st transcriptome/image routes in-sample); image_vec has no trained "
          "part; ccRCC is out of sample for every model.")
    if args.out:
        args.out.write_text(f"# Search by example\n\n`python benchmarks/search_by_example.py --repeats {args.repeats}`\n\n"
                            + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
