"""Peak memory of the stages after the image encoder on a whole slide (issue 22: ≤ 4 GB on 20,000 tiles).

The encoder's forward pass costs ~50 CPU minutes on a 20,000-tile whole slide with the shipped models, so
this benchmark replaces only that pass: ``encoders.features._encode_layout`` returns features drawn from
the shipped model's own training-slide statistics (the familiarity reference: mean and spread per
dimension, so the heads see inputs of the right scale), of the exact shapes the encoder writes. Everything
else is the real pipeline on the real slide: tissue mask, grid layout and neighbour ring, inferred
expression (ensemble, uncertainty), familiarity, proteins, transcriptome–text and aligned embeddings,
pooled image vectors. Each stage's peak RSS is the process's high-water mark when it ends
(:mod:`spotwhisper.timing`); the line ``after features`` is what the encoder stage would leave.

    python benchmarks/stage_memory.py --slide /path/to/wsi.tif            # a slide made by synthetic_slides.py
    python benchmarks/stage_memory.py --data-dir ../shared/data --tissue-cm2 2 --slides-dir /tmp/slides

The grid is 200 µm tiles at 100 µm stride (``grid.overlap: 0.5``), as in ``pipeline_throughput.py --slide wsi``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

OVERLAP = 0.5  #: grid stride = half a tile, as the whole-slide throughput benchmark


def fake_encoder_pass(reference_mean: np.ndarray, reference_std: np.ndarray, seed: int = 0):
    """An ``_encode_layout`` that draws every tile's features from N(mean, std) per dimension (float32)."""
    rng = np.random.default_rng(seed)

    def encode(encoder, slide, layout, cfg, normalizer, progress, read=None):
        n, d, g2 = len(layout), encoder.embed_dim, layout.subtile_grid**2
        draw = lambda *shape: (reference_mean + reference_std * rng.standard_normal((*shape, d))).astype(np.float32)  # noqa: E731
        out = {"features": draw(n), "blur": np.full(n, 1e3, np.float32)}
        if cfg.with_subtiles:
            out["subtiles"] = np.empty((n, g2, d), np.float32)
            for start in range(0, n, 1024):  # in chunks: no float64 copy of the whole array
                out["subtiles"][start:start + 1024] = draw(min(1024, n - start), g2)
        return out

    return encode


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", type=Path, default=None, help="a whole-slide TIFF (else one is made from --data-dir)")
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR"))
    ap.add_argument("--tissue-cm2", type=float, default=2.0, help="tissue area of the slide made (2 cm² ≈ 20,000 tiles)")
    ap.add_argument("--slides-dir", type=Path, default=None, help="keep/reuse the made slide here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    work = Path(tempfile.mkdtemp(prefix="stage_memory_"))
    configs = work / "configs"  # the throughput benchmark's grid (100 µm stride); an empty feature cache
    configs.mkdir()
    from spotwhisper.config import resolve_config_path

    tiles = yaml.safe_load(Path(resolve_config_path("tiles")).read_text())
    tiles["grid"]["overlap"] = OVERLAP
    (configs / "tiles.yaml").write_text(yaml.safe_dump(tiles))
    os.environ["SPOTWHISPER_CONFIG_DIR"] = str(configs)
    os.environ["SPOTWHISPER_CACHE_DIR"] = str(work / "cache")

    from spotwhisper import timing
    from spotwhisper.encoders import features
    from spotwhisper.io.inputs import load_input
    from spotwhisper.pipeline import Models, process_slide

    slide = args.slide
    if slide is None:
        from synthetic_slides import wsi_slide

        folder = args.slides_dir or work
        slide = folder / f"wsi100000_{args.tissue_cm2:g}cm2.tif"
        if not slide.exists():
            if not args.data_dir:
                ap.error("--data-dir (or SPOTWHISPER_DATA_DIR) is needed to make the slide")
            wsi_slide(folder, args.data_dir, tissue_cm2=args.tissue_cm2, name=slide.stem)

    models = Models.load()
    expression = models.expression
    ref = expression.familiarity
    if ref is None:
        raise SystemExit(f"{expression.encoder}: the model has no familiarity reference to draw features from")
    features._encode_layout = fake_encoder_pass(ref.mean, ref.scale)
    inp = load_input(slide)
    print(f"slide {slide} ({inp.slide.dimensions[0]:,} × {inp.slide.dimensions[1]:,} px, {inp.slide.mpp} µm/px); "
          f"grid tiles at {OVERLAP:.0%} overlap; peak RSS before: {timing.peak_rss_mb():.0f} MB")
    timings: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    try:
        out = process_slide(inp, models, timings=timings)
    finally:
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(f"\n{out.n_obs:,} tiles, {time.perf_counter() - t0:.0f} s; encoder pass replaced by features drawn "
          f"from the model's reference ({expression.encoder})\n")
    print("| stage | wall s | CPU s | peak RSS MB at its end |\n| --- | ---: | ---: | ---: |")
    for name, row in timings.items():
        print(f"| {name} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
