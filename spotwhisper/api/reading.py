"""``sw.read``: whatever a user holds → one AnnData that knows its slide.

The AnnData follows :mod:`spotwhisper.keys` (scanpy/squidpy conventions): spot centres in
full-resolution pixels in ``obsm["spatial"]``, the display image and scale factors in
``uns["spatial"][library]``, the path of the image tiles are cut from in its ``metadata``, the slide
id in ``obs["section"]``. :func:`spotwhisper.api.tl.infer` reopens the image from there.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .. import keys
from ..io.inputs import IMAGE_SUFFIXES, SECTION_RE, SlideInput, load_input, load_spot_table
from ..io.slide import open_slide
from ..io.spatial import open_source_slide

#: ``uns["spatial"][lib]["metadata"]["technology"]`` of tiles laid on a grid (an image without spots)
GRID = "grid"
MPP_HINT = ("µm per pixel unknown: the image file does not say. Tiles are cut in µm, so pass mpp= "
            "(40x ≈ 0.25, 20x ≈ 0.5, a Visium hires image ≈ 2–4) — your scanner's metadata shows it")


def read(source, *, spots: str | Path | None = None, mpp: float | None = None, data_dir: str | Path | None = None,
         name: str | None = None, **spatialdata_keys) -> ad.AnnData:
    """Read a slide into AnnData.

    ``source``: a her2st section id (``"C2"``; ``data_dir`` or ``$SPOTWHISPER_DATA_DIR``), a Space
    Ranger output folder (with or without counts), an ``.h5ad``, an image file — with ``spots``, a CSV of
    spot centres (columns ``x``, ``y`` in full-resolution px, optional ``barcode``/``id``), else a
    regular grid of tiles over the tissue (``configs/tiles.yaml`` ``grid``) — or a
    ``spatialdata.SpatialData`` object (``spatialdata_keys``: ``table_key``, ``image_key``,
    ``shapes_key``; see :func:`spotwhisper.api.spatialdata_io.read_spatialdata`).

    ``mpp`` (µm per pixel) overrides what the files say (for a Space Ranger folder: per
    full-resolution pixel); an image whose µm/px is unknown needs it. ``name`` sets the slide id of
    an image (default: the file name). Returns ``(n_spots, n_genes)`` AnnData — measured counts in
    ``X`` when the source has them, else ``(n_spots, 0)``. Errors name the file and what was expected.
    """
    if type(source).__name__ == "SpatialData":
        from .spatialdata_io import read_spatialdata

        return read_spatialdata(source, mpp=mpp, **spatialdata_keys)
    if spatialdata_keys:
        raise TypeError(f"{', '.join(spatialdata_keys)}: only for a SpatialData object")
    text = str(source)
    path = Path(text)
    if spots is not None:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{source}: spots= goes with an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        inp = load_spot_table(spots, path, name=name, mpp=mpp)
        _check_mpp(inp, path)
        return inp.adata
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with open_slide(path, mpp=mpp) as slide:
            if slide.mpp is None:
                raise ValueError(f"{path}: {MPP_HINT}")
            return grid_spots(slide, name or path.stem)
    if not (path.exists() or SECTION_RE.match(text)):
        raise FileNotFoundError(f"{text}: no such file or folder (expected a her2st section id like C2, a Space Ranger "
                                f"folder, an .h5ad or an image; an image with spot centres: read(image, spots=csv))")
    inp = load_input(source, data_dir, mpp=mpp, require_image=False)
    return inp.adata


def _check_mpp(inp: SlideInput, path: Path) -> None:
    if inp.slide is not None and inp.slide.mpp is None:
        raise ValueError(f"{path}: {MPP_HINT}")


def grid_spots(slide, library_id: str) -> ad.AnnData:
    """Grid tiles over the tissue of ``slide`` as spots (no genes): the layout the pipeline encodes for
    an image without spots (``configs/tiles.yaml`` ``grid``, tissue mask and QC)."""
    from ..config import load_config
    from ..encoders import grid_anndata
    from ..tiles import TileConfig, TissueMask, grid_layout
    from ..tiles.tissue import tissue_mask_from_rgb

    cfg = load_config(TileConfig, "tiles")
    thumb = slide.get_thumbnail(cfg.tissue.thumbnail_max_side)
    tissue = TissueMask(mask=tissue_mask_from_rgb(thumb, cfg.tissue), scale=thumb.shape[1] / slide.dimensions[0])
    layout = grid_layout(slide, tissue, cfg.grid, cfg.qc.min_tissue_fraction, cfg.spot.subtile_grid)  # no tissue: an error
    return grid_anndata(slide, layout, library_id, layout.side_px * (1 - cfg.grid.overlap), thumb)


def slide_id(adata: ad.AnnData) -> str:
    """The slide id of a one-slide AnnData (``obs["section"]``, else its only library in ``uns["spatial"]``)."""
    if keys.SECTION in adata.obs and adata.n_obs:
        from ..collection.staging import slide_name

        return slide_name(adata)
    libs = list(adata.uns.get(keys.SPATIAL, {}))
    if len(libs) == 1:
        return str(libs[0])
    raise ValueError("cannot tell the slide: no obs['section'] and not one library in uns['spatial']")


def slide_input(adata: ad.AnnData) -> SlideInput:
    """The :class:`~spotwhisper.io.inputs.SlideInput` the pipeline reads for ``adata``: its image reopened
    from ``uns["spatial"]``; grid tiles (an image without spots) are laid out again, as the CLI does."""
    name = slide_id(adata)
    try:
        slide, scale = open_source_slide(adata, name if name in adata.uns.get(keys.SPATIAL, {}) else None)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise FileNotFoundError(f"{name}: no H&E image to cut tiles from ({err}); read the slide with sw.read") from err
    meta = adata.uns[keys.SPATIAL][next(iter(adata.uns[keys.SPATIAL]))].get("metadata", {})
    grid = meta.get(keys.TECHNOLOGY) == GRID
    return SlideInput(name=name, slide=slide, adata=None if grid else adata, scale=scale)
