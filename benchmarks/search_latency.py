"""Query latency of the search engine: text encoding + scoring + relevance (query against the
reference descriptions, protein levels against their reference) + fusion + regions (+ explanation).

Measured on (a) a real processed slide when --collection is given, and (b) a synthetic slide of
N spots (default 10,000) on a square grid whose embeddings/proteins are random unit vectors — the
engine's cost does not depend on what the vectors mean. FAISS top-k at 1M/10M vectors is in
benchmarks/index_speed.py.

    python benchmarks/search_latency.py [--spots 10000] [--collection demo]
"""

from __future__ import annotations

import argparse
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch

from spotwhisper import keys
from spotwhisper.language import TextExpressionModel
from spotwhisper.search.engine import SearchEngine

#: vocabulary terms (prompt-ensembled over their synonyms) and contrasts
QUERIES = ["tertiary lymphoid structures", "invasive cancer", "immune infiltrate minus invasive cancer",
           "PD-L1 high tumour", "adipose tissue", "B cells", "connective tissue", "Ki-67 high cancer"]
#: free text no vocabulary term names (a user's own words; 4 templates each)
FREE_TEXT = ["lymphocyte-rich area next to tumour", "fatty tissue with small vessels", "dense fibrous stroma",
             "nests of tumour cells", "plasma cell rich region", "necrotic debris", "mucinous areas",
             "ducts lined by epithelium", "hepatocytes", "purple elephant on a bicycle", "collagen bundles"]


def synthetic_slide(n: int, dim: int, genes: list[str], seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.stack([gx.ravel(), gy.ravel()], 1)[:n] * 100.0 + 50
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    a = ad.AnnData(X=rng.gamma(1.0, 0.5, (n, len(genes))).astype(np.float32),
                   obs=pd.DataFrame({keys.SECTION: "synthetic"}, index=[f"s{i}" for i in range(n)]),
                   var=pd.DataFrame(index=genes))
    a.layers["log1p"] = a.X
    a.obsm[keys.SPATIAL] = coords
    a.obsm[keys.TEXT_EMB] = unit(rng.normal(size=(n, dim)))
    a.obsm["image_text_emb_aligned"] = unit(rng.normal(size=(n, dim)))
    from spotwhisper.proteins import ROSIE_MARKERS

    from spotwhisper.search.protein_reference import load_protein_reference

    # raw protein levels drawn from the reference distribution (so the protein route's relevance is realistic)
    ref, u = load_protein_reference(), rng.random((n, len(ROSIE_MARKERS)))
    raw = np.column_stack([np.interp(u[:, j], np.linspace(0, 1, 101), q) if (q := ref.of(m)) is not None
                           else np.full(n, np.nan) for j, m in enumerate(ROSIE_MARKERS)])
    a.obsm[keys.PROTEINS_RAW] = raw.astype(np.float32)
    a.obsm[keys.PROTEINS] = u.astype(np.float32)
    a.uns[keys.PROTEIN_MARKERS] = list(ROSIE_MARKERS)
    a.uns[keys.SPATIAL] = {"synthetic": {"images": {}, "scalefactors": {keys.SPOT_SPACING: 100.0, keys.MPP: 0.5}, "metadata": {}}}
    return a


def time_queries(engine: SearchEngine, label: str, group: str, explain: bool, queries: list[str]) -> None:
    """Median and p95 latency of first-time queries (nothing cached for them) and of the same queries repeated."""
    engine.search("warm-up query for the text tower and the reference descriptions", explain=explain)
    cold, warm = [], []
    for q in queries:
        t = time.perf_counter()
        engine.search(q, explain=explain)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.search(q, explain=explain)
        warm.append(time.perf_counter() - t)
    ms = lambda v, p: f"{1000 * np.percentile(v, p):.0f}"  # noqa: E731
    print(f"| {label} | {group} | {'yes' if explain else 'no'} | {ms(cold, 50)} | {ms(cold, 95)} | {ms(warm, 50)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spots", type=int, default=10_000)
    ap.add_argument("--collection", default=None, help="also time a built collection (e.g. demo)")
    ap.add_argument("--index-dir", default=None, help="folder of the collection (default: the project's indexes/)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    text = TextExpressionModel.from_pretrained()
    print(f"torch threads: {args.threads}; new query = first time (prompt ensemble encoded, relevance computed), "
          "repeated = the same query again (embedding cached); relevance and regions always included. The first "
          "search of a process also embeds the ~30 reference descriptions (once per text model, not timed). A "
          "vocabulary term is prompt-ensembled over its synonyms (up to 40 prompts), free text over 4 templates\n")
    print("| slide | queries | explain | new query p50 ms | new query p95 ms | repeated p50 ms |\n|---|---|---|---|---|---|")
    syn = synthetic_slide(args.spots, text.config.embed_dim, text.genes)
    for name, queries in (("free text", FREE_TEXT), ("vocabulary terms and contrasts", QUERIES)):
        for explain in (False, True):
            # nothing of these queries is cached (the reference descriptions, embedded once per model, stay)
            text.__dict__.pop("_query_cache", None)
            text.text_encoder._cache.clear()  # the sentence encoder's own per-text cache
            engine = SearchEngine({"synthetic": syn}, text_model=text)
            time_queries(engine, f"synthetic, {args.spots:,} spots", name, explain, queries)
    if args.collection:
        from spotwhisper.search.engine import open_engine

        eng = open_engine(args.collection, args.index_dir, text_model=text)
        text.__dict__.pop("_query_cache", None)
        text.text_encoder._cache.clear()
        n = sum(eng.slide(s).n_obs for s in eng.slide_names())
        time_queries(eng, f"collection {args.collection} ({len(eng.slide_names())} slides, {n} spots)", "free text", True, FREE_TEXT)


if __name__ == "__main__":
    main()
