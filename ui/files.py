"""Files in and out of the UI: uploads kept in a per-session folder, and exports of a result.

Uploads are copied into ``<upload root>/<session>/uploads/<time>/`` before anything reads them, so a
failed or interrupted processing step never loses what the user sent; the processed slide is
written beside them (``processed/<name>.h5ad``). Exports go to ``<session>/exports/``:

* ``<query>_spots.csv`` — every searched spot: slide, spot, x, y (slide px), fused score, region, route scores
* ``<query>_<slide>.h5ad`` — the slide's AnnData with the scores in ``obs["search_*"]`` and the query in ``uns["search"]``
* ``<query>_<slide>.geojson`` — region outlines as QuPath annotations (slide px)
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from spotwhisper import keys
from spotwhisper.atomic import atomic_file
from spotwhisper.io import SlideError, open_slide, write_h5ad
from spotwhisper.io.inputs import IMAGE_SUFFIXES, SlideInput, load_spot_table
from spotwhisper.search.engine import SearchResult
from spotwhisper.search.export import slug, write_csv, write_geojson

SPOT_TABLE_SUFFIXES = {".csv"}


def session_folder(root: str | Path, session: str) -> Path:
    """``root/<session>`` (created); ``session`` is reduced to safe characters."""
    safe = re.sub(r"[^0-9A-Za-z_-]+", "_", session or "local")[:64] or "local"
    folder = Path(root).expanduser() / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep_upload(src: str | Path, folder: Path) -> Path:
    """Copy an uploaded file to ``folder/uploads/<time stamp>/<its name>``; returns the copy."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: the upload did not arrive (no such file)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest_dir, n = folder / "uploads" / stamp, 1
    while (dest_dir / src.name).exists():
        n += 1
        dest_dir = folder / "uploads" / f"{stamp}-{n}"
    dest = dest_dir / src.name
    with atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def check_image(path: Path, thumb_px: int = 64) -> None:
    """Raise ``ValueError`` naming the file unless it is a slide image we can decode."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path.name} is not an image: expected one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    try:
        with open_slide(path) as slide:
            slide.get_thumbnail(thumb_px)
    except SlideError as err:
        raise ValueError(f"{path.name} cannot be read as an image ({err})") from err


def unique_name(name: str, taken: list[str]) -> str:
    """``name`` made file-safe, with ``-2``, ``-3`` … appended when ``taken`` already holds it."""
    base = re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_.") or "upload"
    out, n = base, 1
    while out in taken:
        n += 1
        out = f"{base}-{n}"
    return out


def prepare_upload(image: Path, spots: Path | None, name: str, mpp: float) -> SlideInput:
    """A checked :class:`SlideInput` for a kept upload: grid tiles for a bare image, spot tiles
    when a CSV spot table (x, y in full-resolution px) comes with it. ``mpp`` (µm/px) is used
    only when the image file does not say."""
    check_image(image)
    with open_slide(image) as probe:
        file_mpp = probe.mpp
    if spots is not None:
        if spots.suffix.lower() not in SPOT_TABLE_SUFFIXES:
            raise ValueError(f"{spots.name}: a spot table must be a .csv with columns x, y (full-resolution pixels)")
        return load_spot_table(spots, image, name=name, mpp=file_mpp or mpp)
    slide = open_slide(image, mpp=file_mpp or mpp)
    return SlideInput(name=name, slide=slide, adata=None)


def process_upload(inp: SlideInput, models, folder: Path, progress: bool = True,
                   run: Callable | None = None) -> tuple[ad.AnnData, Path]:
    """Run the pipeline on ``inp`` and keep the result as ``folder/processed/<name>.h5ad``."""
    from spotwhisper.pipeline import process_slide

    adata = (run or process_slide)(inp, models, progress=progress)
    return adata, write_h5ad(adata, folder / "processed" / f"{inp.name}.h5ad")


def add_to_collection(engine, adata: ad.AnnData) -> str:
    """Index a processed upload into the collection ``engine`` serves from disk (FAISS vectors of
    every route + its slide file) → a sentence saying where. ``ValueError`` when the engine serves
    no collection on disk or the collection was built with other models; ``KeyError`` when the
    collection indexes a route the slide lacks."""
    from spotwhisper.collection import index_slides

    if getattr(engine, "store", None) is None:
        raise ValueError("this UI serves slides from memory, not a collection on disk, so there is nothing to add to")
    folder = engine.store.folder.parent  # <index_dir>/<collection>/slides → <index_dir>/<collection>
    index = index_slides([adata], folder.name, index_dir=folder.parent, mode="add")
    return f"Added to collection '{index.name}' on disk ({len(index.slides())} slides now)"


# -- exports -------------------------------------------------------------------------------
def scored_anndata(result: SearchResult, slide: str) -> ad.AnnData:
    """A copy of ``slide``'s AnnData with the result's scores in ``obs`` and the query in ``uns``."""
    hits = next((h for h in result.slides if h.slide == slide), None)
    if hits is None:
        raise KeyError(f"slide {slide!r} is not in this result (slides: {', '.join(h.slide for h in result.slides)})")
    out = hits.adata.copy()
    region = np.zeros(out.n_obs, dtype=np.int64)
    for r in hits.regions:
        region[r.spots] = r.id
    out.obs[keys.SEARCH_FUSED] = hits.fused
    out.obs[keys.SEARCH_REGION] = region
    for route, scores in hits.routes.items():
        out.obs[keys.SEARCH_SCORE_PREFIX + route] = scores
    q = result.query
    out.uns[keys.SEARCH_INFO] = {"query": q.text, "positive": q.positive, "negative": q.negative or "",
                           "threshold": float(result.threshold), "routes": list(result.routes),
                           "n_regions": len(hits.regions)}
    return out


def export_result(result: SearchResult, slide: str, folder: Path) -> list[Path]:
    """Write CSV (all searched slides), ``.h5ad`` and GeoJSON (``slide``) into ``folder/exports/``."""
    out = folder / "exports"
    stem = slug(result.query.text)
    table = pd.concat([h.spot_table() for h in result.slides], ignore_index=True)
    hits = next(h for h in result.slides if h.slide == slide)
    return [
        write_csv(table, out / f"{stem}_spots.csv"),
        write_h5ad(scored_anndata(result, slide), out / f"{stem}_{slug(slide)}.h5ad"),
        write_geojson(hits.regions, result.query.text, out / f"{stem}_{slug(slide)}.geojson", slide=slide),
    ]
