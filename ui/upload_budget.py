"""How much work an upload will cost, told from its header before a pixel is decoded.

A file's size says little about its cost: an 80 KB tiled TIFF can claim 100,000 × 100,000 px (its
tiles all pointing at one compressed white tile), and reading it whole for a thumbnail inflates
~30 GB. So an upload is priced from what its header says and what the pipeline will do with it
(``configs/ui.yaml`` ``upload_budget``), in CPU seconds:

* decoding the overview the tissue mask is made from: the pyramid level a
  ``tissue.thumbnail_max_side`` px thumbnail is read from (``Slide.get_thumbnail``; the whole
  image when it has no pyramid);
* decoding the tiles: ``(tile side in px)²`` at full resolution per tile;
* running the image models on the tiles (``cpu_s_per_tile``): one per spot of the spot table, or —
  for a bare image — a grid of ``grid.tile_um`` tiles over the *whole* image (an upper bound: only
  tiles on tissue are run).

An upload estimated above ``max_cpu_s`` is refused with the estimate and the setting that limits it
(:func:`check_upload_work`); the upload slot is never held for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotwhisper.io.slide import Slide
from spotwhisper.tiles import TileConfig

from .config import UploadBudget


@dataclass(frozen=True)
class UploadWork:
    """The estimated work of processing one upload."""

    tiles: int  #: tiles through the image models (spots, or grid tiles over the whole image)
    decode_px: float  #: pixels decoded (overview + tiles)
    cpu_s: float  #: estimated CPU seconds

    def sentence(self) -> str:
        return (f"about {self.cpu_s:,.0f} CPU s ({self.tiles:,} tiles through the image models, "
                f"{self.decode_px / 1e6:,.0f} Mpx to decode)")


def estimate_upload_work(slide: Slide, mpp: float, n_spots: int | None, budget: UploadBudget,
                         tiles: TileConfig | None = None) -> UploadWork:
    """The work of running the pipeline on ``slide`` (header only: level sizes) at ``mpp`` µm/px with
    ``n_spots`` spots (None = a bare image, tiled on a grid)."""
    from spotwhisper.config import load_config

    tiles = tiles or load_config(TileConfig, "tiles")
    w, h = slide.dimensions
    level = slide.best_level_for_downsample(max(w, h) / tiles.tissue.thumbnail_max_side)
    lw, lh = slide.level_dimensions[level]
    overview_px = float(lw) * float(lh)
    side_um = tiles.grid.tile_um
    if n_spots is None:
        n_tiles = math.ceil(w * mpp / side_um) * math.ceil(h * mpp / side_um)
    else:
        n_tiles = int(n_spots)
    decode_px = overview_px + n_tiles * (side_um / mpp) ** 2
    cpu_s = decode_px / (budget.decode_mpx_per_s * 1e6) + n_tiles * budget.cpu_s_per_tile
    return UploadWork(n_tiles, decode_px, cpu_s)


def check_upload_work(name: str, slide: Slide, mpp: float, n_spots: int | None, budget: UploadBudget) -> UploadWork:
    """:func:`estimate_upload_work`, refused (``ValueError`` naming the file, the estimate and the
    limit) beyond ``budget.max_cpu_s``."""
    work = estimate_upload_work(slide, mpp, n_spots, budget)
    if work.cpu_s > budget.max_cpu_s:
        w, h = slide.dimensions
        raise ValueError(f"{name}: {w:,} × {h:,} px at {mpp:g} µm/px would need {work.sentence()}, more than this "
                         f"server gives one upload ({budget.max_cpu_s:,.0f} CPU s, configs/ui.yaml "
                         "upload_budget.max_cpu_s); add it to a collection offline instead "
                         "(`spotwhisper index build --collection NAME --add <image>`)")
    return work
