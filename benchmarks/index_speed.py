"""FAISS index speed and quality: exact Flat vs IVF-Flat vs IVF-PQ on synthetic unit vectors.

Vectors come from a gaussian mixture (``--clusters`` centres, noise of about the centres' norm) in
a ``--intrinsic``-dimensional latent space mapped into ``--dim`` dimensions and normalised: real
embeddings have clusters and a low intrinsic dimension, which IVF and PQ exploit. For each
size the script prints build time (train + add), RAM per vector (from faiss code sizes) and for
the whole index, query latency (batched and single queries) and recall@k against exact search.
The index settings (nlist, PQ bytes, training sample) come from ``configs/index.yaml`` through
``spotwhisper.index.factory``, so the figures describe what the index layer builds.

    nice python benchmarks/index_speed.py                     # 10k and 1M, dim 256, 1 thread
    nice python benchmarks/index_speed.py --big               # adds 10M with IVF-PQ only (~20 min on 1 shared core)
    nice python benchmarks/index_speed.py --updates           # add/remove a slide in a sharded collection vs rebuild
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import faiss
import numpy as np
import pandas as pd

from spotwhisper.index import CollectionIndex, RouteModel, SlideData, load_index_config
from spotwhisper.index.factory import (
    bytes_per_vector,
    is_lossy,
    nlist_for,
    search_params,
    train_index,
    training_sample,
)
from spotwhisper.index.shards import rerank


def make_space(args, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres ``(clusters, m)`` in an ``m``-d latent space and an orthonormal map ``(m, dim)`` into the
    embedding space; ``m = --intrinsic`` (embeddings have a low intrinsic dimension), or ``dim`` when 0."""
    m = args.intrinsic or args.dim
    centres = rng.standard_normal((args.clusters, m)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((args.dim, m)))[0].T.astype(np.float32)
    return centres, basis


def mixture(n: int, space, seed: int, noise: float, chunk: int = 250_000) -> np.ndarray:
    """``n`` unit float32 vectors: a random centre + gaussian noise of norm ≈ ``noise`` in the latent space,
    mapped into the embedding space, plus 2 % isotropic noise."""
    centres, basis = space
    rng = np.random.default_rng(seed)
    m, d = basis.shape
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        z = centres[rng.integers(0, len(centres), k)] + rng.standard_normal((k, m), dtype=np.float32) * (
            noise / np.sqrt(m)
        )
        x = z @ basis + rng.standard_normal((k, d), dtype=np.float32) * (0.02 / np.sqrt(d))
        out[start : start + k] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latency(index: faiss.Index, queries: np.ndarray, k: int, params) -> tuple[float, float, np.ndarray]:
    """(batched ms/query, median single-query ms, ids of the batched search)."""
    t0 = time.perf_counter()
    _, ids = index.search(queries, k, params=params)
    batched = (time.perf_counter() - t0) * 1e3 / len(queries)
    singles = []
    for q in queries[:30]:
        t0 = time.perf_counter()
        index.search(q[None], k, params=params)
        singles.append((time.perf_counter() - t0) * 1e3)
    return batched, float(np.median(singles)), ids


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k found."""
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


def probe(n: int, factory: str, index, queries, truth, args, cfg, timing: tuple, lookup=None,
          time_lookup: bool = True) -> list[dict]:
    """One row per nprobe (plus a re-ranked row for lossy codes when ``lookup(ids)`` gives float32 vectors;
    ``time_lookup=False`` leaves the lookup's own time out, for a lookup that regenerates data)."""
    train, add, n_train = timing
    rows = []

    def row(name: str, b: float, s: float, ids: np.ndarray) -> dict:
        return dict(n=n, index=name, train_s=train, add_s=add, bytes_per_vec=bytes_per_vector(index),
                    ms_batched=b, ms_single=s, recall=recall(ids, truth))  # fmt: skip

    for nprobe in args.nprobe:
        cfg.search.nprobe = nprobe
        b, s, ids = latency(index, queries, args.k, search_params(index, cfg.search, args.k))
        rows.append(row(f"{factory} nprobe={nprobe}", b, s, ids))
        print(f"  {factory} nprobe={nprobe}: train {train:.1f} s on {n_train:,}, add {add:.1f} s, "
              f"{b:.2f} ms/query, recall@{args.k} {rows[-1]['recall']:.3f}", flush=True)  # fmt: skip
        if lookup is not None and is_lossy(index) and cfg.search.rerank > 1:  # as a collection with float32 copies
            kk = args.k * cfg.search.rerank
            spent = [0.0]

            def timed(ids: np.ndarray) -> np.ndarray:
                t = time.perf_counter()
                out = lookup(ids)
                spent[0] += time.perf_counter() - t
                return out

            t0 = time.perf_counter()
            _, cand = index.search(queries, kk, params=search_params(index, cfg.search, kk))
            _, ids = rerank(queries, cand, timed, args.k)
            b = (time.perf_counter() - t0 - (0.0 if time_lookup else spent[0])) * 1e3 / len(queries)
            rows.append(row(f"{factory} nprobe={nprobe} rerank×{cfg.search.rerank}", b, np.nan, ids))
    return rows


def run_size(n: int, args, cfg, space, queries, factories) -> list[dict]:
    """Build every index family for ``n`` vectors and measure it."""
    rows = []
    t0 = time.perf_counter()
    data = mixture(n, space, seed=n, noise=args.noise)
    print(f"\n[{n:,} × {args.dim}] data generated in {time.perf_counter() - t0:.1f} s", flush=True)
    exact = faiss.IndexFlatIP(args.dim)
    t0 = time.perf_counter()
    exact.add(data)
    build = time.perf_counter() - t0
    b, s, truth = latency(exact, queries, args.k, None)
    rows.append(
        dict(
            n=n,
            index="Flat (exact)",
            train_s=0.0,
            add_s=build,
            bytes_per_vec=4 * args.dim,
            ms_batched=b,
            ms_single=s,
            recall=1.0,
        )
    )
    print(f"  Flat: add {build:.1f} s, {b:.2f} ms/query batched, {s:.2f} ms single", flush=True)
    del exact
    for fam in factories:
        factory = fam.format(nlist=nlist_for(n, cfg.factory), pq_m=args.dim // cfg.factory.pq_dims_per_byte)
        t0 = time.perf_counter()
        sample = training_sample(data, factory, args.dim, cfg.factory, cfg.seed)
        index = train_index(factory, args.dim, sample, seed=cfg.seed)
        train = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.add_with_ids(data, np.arange(n, dtype=np.int64))
        add = time.perf_counter() - t0
        rows += probe(n, factory, index, queries, truth, args, cfg, (train, add, len(sample)), lookup=lambda i: data[i])
        del index
    return rows


def run_big(n: int, args, cfg, space, queries) -> list[dict]:
    """IVF-PQ only, data generated and added in chunks; exact truth by streaming over the same chunks."""
    chunk = min(1_000_000, n)
    factory = f"IVF{nlist_for(n, cfg.factory)}_HNSW32,PQ{args.dim // cfg.factory.pq_dims_per_byte}"
    print(f"\n[{n:,} × {args.dim}] {factory}, in chunks of {chunk:,}", flush=True)
    first = mixture(min(chunk, n), space, seed=n, noise=args.noise)
    t0 = time.perf_counter()
    sample = training_sample(first, factory, args.dim, cfg.factory, cfg.seed)
    index, n_train = train_index(factory, args.dim, sample, seed=cfg.seed), len(sample)
    train, add = time.perf_counter() - t0, 0.0
    heap = faiss.ResultHeap(len(queries), args.k, keep_max=True)
    flat_s = 0.0  # exact search over all chunks = a Flat index of n vectors searched piecewise
    for i, start in enumerate(range(0, n, chunk)):
        part = first if i == 0 else mixture(min(chunk, n - start), space, seed=n + i, noise=args.noise)
        t0 = time.perf_counter()
        index.add_with_ids(part, np.arange(start, start + len(part), dtype=np.int64))
        add += time.perf_counter() - t0
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(part)
        t0 = time.perf_counter()
        dist, ids = flat.search(queries, args.k)
        flat_s += time.perf_counter() - t0
        heap.add_result(dist, ids + start)
        print(f"  chunk {i + 1}: {start + len(part):,} vectors, add {add:.0f} s so far", flush=True)
    heap.finalize()
    del first, part, flat
    exact = dict(n=n, index="Flat (exact, searched in chunks)", train_s=0.0, add_s=np.nan, bytes_per_vec=4 * args.dim,
                 ms_batched=flat_s * 1e3 / len(queries), ms_single=np.nan, recall=1.0)  # fmt: skip

    def lookup(ids: np.ndarray) -> np.ndarray:
        """float32 vectors of ``ids``, regenerated chunk by chunk (the data are never all in memory)."""
        out = np.empty((len(ids), args.dim), dtype=np.float32)
        for c in np.unique(ids // chunk):
            sel = ids // chunk == c
            start = int(c) * chunk
            out[sel] = mixture(min(chunk, n - start), space, seed=n + int(c), noise=args.noise)[ids[sel] - start]
        return out

    # a collection reads the candidates' float32 copies from memory (a gather of k × rerank rows per query);
    # regenerating them here is a benchmark artefact, so its time is left out of the re-ranked latency
    return [exact, *probe(n, factory, index, queries, heap.I, args, cfg, (train, add, n_train), lookup=lookup,
                          time_lookup=False)]


def run_updates(args, space) -> pd.DataFrame:
    """Sharded collection: time to add / remove one slide against a full rebuild, and sharded vs merged search."""
    cfg = load_index_config()
    cfg.shards.max_vectors = args.update_shard
    n_slides, per = args.update_slides, args.update_spots
    model = {"r": RouteModel("synthetic", args.dim)}
    slides = [
        SlideData(
            f"S{i}",
            pd.DataFrame({"spot": np.arange(per).astype(str)}),
            {"r": mixture(per, space, 1000 + i, args.noise)},
        )
        for i in range(n_slides + 1)
    ]
    queries = mixture(args.queries, space, 7, args.noise)
    root = tempfile.mkdtemp(prefix="index-bench-")
    rows = []
    try:
        for factory in ("Flat", f"IVF{nlist_for(n_slides * per, cfg.factory)},Flat"):
            t0 = time.perf_counter()
            coll = CollectionIndex.build(
                "bench", slides[:-1], model, index_dir=root, cfg=cfg, factory=factory, overwrite=True
            )
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            coll.add_slide(slides[-1])
            add = time.perf_counter() - t0
            t0 = time.perf_counter()
            coll.remove_slide("S0")  # S0 shares a shard with other slides: that shard is rewritten
            remove = time.perf_counter() - t0
            t0 = time.perf_counter()
            coll.search("r", queries, k=args.k)
            sharded = (time.perf_counter() - t0) * 1e3 / len(queries)
            merged = coll.merged_index("r")
            t0 = time.perf_counter()
            merged.search(queries, args.k, params=search_params(merged, cfg.search, args.k))
            single = (time.perf_counter() - t0) * 1e3 / len(queries)
            rows.append(
                dict(
                    factory=factory,
                    vectors=n_slides * per,
                    shards=len(coll.manifest.shards),
                    rebuild_s=build,
                    add_slide_s=add,
                    remove_slide_s=remove,
                    ms_query_sharded=sharded,
                    ms_query_merged=single,
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit cluster centres")
    parser.add_argument("--intrinsic", type=int, default=32, help="latent dimension of the data (0 = the full dim)")
    parser.add_argument(
        "--threads", type=int, default=1, help="faiss OpenMP threads (2 spin badly on the shared machine)"
    )
    parser.add_argument(
        "--big", action="store_true",
        help="also 10M vectors with IVF-PQ (about 0.4 GB index, ~20 min): exact truth and Flat latency by "
        "streaming the same data in chunks; re-ranking regenerates the candidates' float32 vectors",
    )
    parser.add_argument("--big-n", type=int, default=10_000_000, help="size of the --big run")
    parser.add_argument("--updates", action="store_true", help="measure add/remove of a slide in a sharded collection")
    parser.add_argument("--update-slides", type=int, default=40)
    parser.add_argument("--update-spots", type=int, default=5000)
    parser.add_argument("--update-shard", type=int, default=50_000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    cfg = load_index_config()
    space = make_space(args, np.random.default_rng(0))
    queries = mixture(args.queries, space, seed=1, noise=args.noise)
    print(
        f"faiss {faiss.__version__}, {args.threads} threads, dim {args.dim} (latent {args.intrinsic or args.dim}), "
        f"{args.clusters} clusters, "
        f"{args.queries} queries, k={args.k}, training sample = {cfg.factory.train_per_list} × nlist"
    )
    rows = []
    for n in args.sizes:
        rows += run_size(n, args, cfg, space, queries, ["IVF{nlist},Flat", "IVF{nlist},PQ{pq_m}"])
    if args.big:
        rows += run_big(args.big_n, args, cfg, space, queries)
    table = pd.DataFrame(rows)
    table["MB_per_million"] = table["bytes_per_vec"] * 1e6 / 2**20
    table["index_MB"] = table["bytes_per_vec"] * table["n"] / 2**20
    pd.set_option("display.width", 200)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"))
    if args.updates:
        print("\nUpdates in a sharded collection (seconds; query latency in ms/query, batched):")
        print(run_updates(args, space).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
