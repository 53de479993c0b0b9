"""How long the UI's steps take on a built collection: search, slider, route toggle, overlay,
top tiles (cold = first read of the source image), export.

    python benchmarks/ui_latency.py --collection demo [--index-dir DIR] [--query TEXT] [--repeat 3]

Prints one line per step: median seconds over ``--repeat`` runs (cold steps run once).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

#: distinct queries for the repeated searches (query embeddings are cached, so one query would time the cache)
OTHER_QUERIES = ["immune infiltrate", "invasive cancer", "fibrous stroma", "adipose tissue", "necrosis", "ductal carcinoma in situ"]


def _timed(fn, repeat: int) -> tuple[float, object]:
    """Median seconds of ``fn(i)`` over ``repeat`` runs, and its last result."""
    times, out = [], None
    for i in range(repeat):
        t = time.perf_counter()
        out = fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default="demo")
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--query", default="tertiary lymphoid structures")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui import handlers as h
    from spotwhisper.ui.config import load_ui_config
    from spotwhisper.ui.display import overlay, tile_gallery
    from spotwhisper.ui.files import export_result

    t = time.perf_counter()
    engine = open_engine(args.collection, args.index_dir)
    cfg = load_ui_config()
    view = h.new_view(engine, cfg)
    n_spots = sum(engine.slide(s).n_obs for s in engine.slide_names())
    print(f"collection {args.collection!r}: {len(engine.slide_names())} slide(s), {n_spots} spots; "
          f"open {time.perf_counter() - t:.2f} s; torch threads 1")
    t = time.perf_counter()
    _, view = h.run_search(engine, view, args.query, cfg)
    print(f"search, first (model warm-up)       {time.perf_counter() - t:7.3f} s")
    sec, _ = _timed(lambda i: h.run_search(engine, view, OTHER_QUERIES[i % 6], cfg), args.repeat)
    print(f"search, one slide (new query)       {sec:7.3f} s")
    sec, _ = _timed(lambda i: h.run_compare_slides(engine, view, OTHER_QUERIES[(i + 3) % 6], cfg), args.repeat)
    print(f"search, whole collection (new query){sec:7.3f} s")
    sec, _ = _timed(lambda _: h.update_view(engine, view, cfg, threshold=view.threshold - 0.5), args.repeat)
    print(f"threshold slider (no search)        {sec:7.3f} s")
    sec, _ = _timed(lambda _: h.update_view(engine, view, cfg, groups=list(cfg.route_groups)[:1]), args.repeat)
    print(f"route toggle (re-fuse, no search)   {sec:7.3f} s")
    hits = view.hits()
    sec, img = _timed(lambda _: overlay(hits, view.threshold, cfg.display_max_side, cfg.crop_margin), args.repeat)
    print(f"overlay render ({img.size[0]}×{img.size[1]} px)       {sec:7.3f} s")
    t = time.perf_counter()
    tile_gallery(hits, cfg.gallery_tiles, cfg.tile_px, cfg.tile_context)
    print(f"top {cfg.gallery_tiles} tiles, cold (opens source)   {time.perf_counter() - t:7.3f} s")
    sec, _ = _timed(lambda _: tile_gallery(hits, cfg.gallery_tiles, cfg.tile_px, cfg.tile_context), args.repeat)
    print(f"top {cfg.gallery_tiles} tiles, warm                  {sec:7.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        sec, paths = _timed(lambda _: export_result(view.shown, hits.slide, Path(tmp)), args.repeat)
        sizes = ", ".join(f"{p.suffix} {p.stat().st_size / 1e6:.2f} MB" for p in paths)
    print(f"export CSV + h5ad + GeoJSON         {sec:7.3f} s ({sizes})")


if __name__ == "__main__":
    main()
