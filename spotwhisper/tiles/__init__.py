"""Stage 2 — tissue mask, tile QC, Macenko normalisation, spot-centred tiles and grids.

Typical use::

    slide, scale = io.open_source_slide(adata)
    layout = tiles.spot_layout(adata, slide, scale, cfg.spot)
    for batch in tiles.iter_tile_batches(slide, layout, out_px=224):
        ...  # batch.tiles (B, 224, 224, 3), batch.subtiles (B, 9, 224, 224, 3)
"""

from .config import GridTileConfig, QCConfig, SpotTileConfig, StainConfig, TileConfig, TissueConfig
from .extract import TileBatch, iter_tile_batches, read_tile
from .layout import TileLayout, grid_layout, spot_layout
from .preview import render_preview, save_preview
from .stain import MacenkoNormalizer, StainMatrix, estimate_stains
from .tissue import NoTissueError, TissueMask, blur_variance, compute_tissue_mask, tile_qc, tissue_mask_from_rgb

__all__ = [
    "GridTileConfig",
    "MacenkoNormalizer",
    "NoTissueError",
    "QCConfig",
    "SpotTileConfig",
    "StainConfig",
    "StainMatrix",
    "TileBatch",
    "TileConfig",
    "TileLayout",
    "TissueConfig",
    "TissueMask",
    "blur_variance",
    "compute_tissue_mask",
    "estimate_stains",
    "grid_layout",
    "iter_tile_batches",
    "read_tile",
    "render_preview",
    "save_preview",
    "spot_layout",
    "tile_qc",
    "tissue_mask_from_rgb",
]
