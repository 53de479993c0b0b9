"""Files in and out of the UI: uploads kept in a per-session folder, and exports of a result.

Uploads are copied into ``<session folder>/uploads/<time>/`` (:mod:`spotwhisper.ui.sessions`)
before anything reads them, so a failed or interrupted processing step never loses what the user
sent; the processed slide is written beside them (``processed/<name>.h5ad``). An image's size is
read from its header (:func:`check_image_size`: PIL's lazy open, TIFF tags) and refused beyond the
configured pixel limits before a single pixel is decoded. Exports go to ``<session>/exports/``
under names no earlier export of the session uses:

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
import pandas as pd
from PIL import Image

from spotwhisper import keys
from spotwhisper.atomic import atomic_file
from spotwhisper.io import SlideError, open_slide, write_h5ad
from spotwhisper.io.inputs import IMAGE_SUFFIXES, SlideInput, load_spot_table, read_spot_table
from spotwhisper.io.slide import TIFF_SUFFIXES
from spotwhisper.names import safe_name, slug, unique_path
from spotwhisper.search.engine import SearchResult
from spotwhisper.search.export import write_csv, write_geojson

from .config import UIConfig, UploadBudget
from .upload_budget import check_upload_work
from .upload_mpp import MppChoice, resolve_mpp

SPOT_TABLE_SUFFIXES = {".csv"}
#: an absolute path (POSIX or home-relative) inside a message: its folders are dropped before users see it
_PATH = re.compile(r"(?<![\w.:/])(?:~|/)(?:[^\s'\"`<>|,;()\[\]]*/)+(?P<name>[^\s'\"`<>|,;()\[\]/]*)")


def public_text(text: str) -> str:
    """``text`` with every absolute server path reduced to its file name (``/srv/…/x.png`` → ``x.png``):
    messages shown to users never reveal where the server keeps files."""
    return _PATH.sub(lambda m: m.group("name") or "…", str(text))


def public_error(err: BaseException) -> str:
    """An error's sentence as users may see it: its message (a ``KeyError``'s without the quotes
    ``str()`` adds) through :func:`public_text`."""
    return public_text(str(err.args[0] if err.args else err))


def session_folder(root: str | Path, session: str) -> Path:
    """``root/<session>`` (created); ``session`` is reduced to a safe name."""
    folder = Path(root).expanduser() / safe_name(session or "local", 64, "local")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep_upload(src: str | Path, folder: Path) -> Path:
    """Copy an uploaded file to ``folder/uploads/<time stamp>/<its name, made safe>``; returns the copy."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src.name}: the upload did not arrive (no such file)")
    suffix = src.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,10}", src.suffix.lower()) else ""
    name = f"{safe_name(src.stem, 100, 'upload')}{suffix}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest_dir, n = folder / "uploads" / stamp, 1
    while (dest_dir / name).exists():
        n += 1
        dest_dir = folder / "uploads" / f"{stamp}-{n}"
    dest = dest_dir / name
    with atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def image_size(path: Path) -> tuple[int, int, bool]:
    """``(width, height, tiled)`` of an image's full-resolution level, from its header only (no
    pixel is decoded): TIFF tags through ``tifffile``, else PIL's lazy open. ``ValueError`` naming
    the file when the header cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                return int(page.imagewidth), int(page.imagelength), bool(page.is_tiled)
        if suffix in IMAGE_SUFFIXES - TIFF_SUFFIXES - {".jpg", ".jpeg", ".png", ".bmp"}:  # OpenSlide formats
            with open_slide(path) as slide:
                w, h = slide.dimensions
                return int(w), int(h), True
        with Image.open(path) as im:  # lazy: reads the header
            return int(im.size[0]), int(im.size[1]), False
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path.name}: the image is far larger than this server accepts ({err})") from err
    except (OSError, SlideError, ValueError, IndexError, KeyError, AttributeError) as err:
        raise ValueError(f"{path.name} cannot be read as an image ({err})") from err


def check_image_size(path: Path, max_pixels: int, max_tiled_pixels: int) -> tuple[int, int]:
    """Refuse (``ValueError``) an image larger than ``max_pixels`` (plain images, decoded whole) or
    ``max_tiled_pixels`` (tiled, read by region), read from the header → ``(width, height)``."""
    w, h, tiled = image_size(path)
    limit = max_tiled_pixels if tiled else max_pixels
    if w <= 0 or h <= 0:
        raise ValueError(f"{path.name}: the image has no pixels ({w} × {h} px)")
    if w * h > limit:
        kind = "a tiled image" if tiled else "a plain (untiled) image, which is decoded whole"
        hint = "" if tiled else "; convert it to a tiled pyramidal TIFF (e.g. `vips tiffsave --tile --pyramid`)"
        raise ValueError(f"{path.name}: {w:,} × {h:,} px ({w * h / 1e6:,.0f} Mpx) is more than this server accepts "
                         f"for {kind} ({limit / 1e6:,.0f} Mpx){hint}")
    return w, h


def check_image(path: Path, thumb_px: int = 64) -> None:
    """Raise ``ValueError`` naming the file unless it is a slide image we can decode (call
    :func:`check_image_size` first: this decodes a thumbnail, which reads a PNG whole)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path.name} is not an image: expected one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    try:
        with open_slide(path) as slide:
            slide.get_thumbnail(thumb_px)
    except SlideError as err:
        raise ValueError(f"{path.name} cannot be read as an image ({err})") from err


def prepare_upload(image: Path, spots: Path | None, name: str, mpp: float, max_pixels: int = 150_000_000,
                   max_tiled_pixels: int = 20_000_000_000, budget: UploadBudget | None = None) -> SlideInput:
    """A checked :class:`SlideInput` for a kept upload: grid tiles for a bare image, spot tiles
    when a CSV spot table (x, y in full-resolution px) comes with it. ``mpp`` (µm/px) is used
    only when the image file does not say. Before anything is decoded, the image's size is checked
    from its header against ``max_pixels`` / ``max_tiled_pixels`` and the work it would cost against
    ``budget`` (``configs/ui.yaml``; :mod:`spotwhisper.ui.upload_budget`)."""
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{image.name} is not an image: expected one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    check_image_size(image, max_pixels, max_tiled_pixels)
    if spots is not None and spots.suffix.lower() not in SPOT_TABLE_SUFFIXES:
        raise ValueError(f"{spots.name}: a spot table must be a .csv with columns x, y (full-resolution pixels)")
    n_spots = len(read_spot_table(spots)[0]) if spots is not None else None
    with open_slide(image) as probe:  # the header only
        file_mpp = probe.mpp
        check_upload_work(image.name, probe, file_mpp or mpp, n_spots, budget or UploadBudget())
    check_image(image)
    if spots is not None:
        return load_spot_table(spots, image, name=name, mpp=file_mpp or mpp)
    slide = open_slide(image, mpp=file_mpp or mpp)
    return SlideInput(name=name, slide=slide, adata=None)


def upload_input(kept: list[Path], name: str, typed_mpp: float | None, cfg: UIConfig) -> tuple[SlideInput | None, MppChoice]:
    """The checked input of a kept upload (``[image]`` or ``[image, spot table]``) and the µm/px used:
    the spot table (every row, :func:`~spotwhisper.io.inputs.read_spot_table`), µm/px
    (:func:`~spotwhisper.ui.upload_mpp.resolve_mpp`, header only), then :func:`prepare_upload` (pixels
    and work budget from the header, then a thumbnail). ``(None, choice)`` when µm/px is unknown
    (ask the user); ``ValueError`` naming the file for anything that cannot be used."""
    image, spots = kept[0], (kept[1] if len(kept) > 1 else None)
    xy = read_spot_table(spots)[0] if spots is not None else None
    choice = resolve_mpp(image, xy, typed_mpp)
    if choice.value is None:
        return None, choice
    return prepare_upload(image, spots, name, choice.value, cfg.max_image_pixels, cfg.max_tiled_pixels,
                          cfg.upload_budget), choice


def process_upload(inp: SlideInput, models, folder: Path, progress: bool = True,
                   run: Callable | None = None) -> tuple[ad.AnnData, Path]:
    """Run the pipeline on ``inp`` and keep the result as ``folder/processed/<name>.h5ad``."""
    from spotwhisper.pipeline import process_slide

    adata = (run or process_slide)(inp, models, progress=progress)
    return adata, write_h5ad(adata, folder / "processed" / f"{inp.name}.h5ad")


def models_sentence(adata: ad.AnnData) -> str:
    """A sentence naming the image models that read a processed upload when they are not the default
    ones (a slide coarser than ``coarse_above_mpp`` in configs/pipeline.yaml), else ``""``."""
    if adata.uns.get(keys.PIPELINE, {}).get("image_models") != "coarse":
        return ""
    return ("At this resolution it was read by the coarse image models (stain statistics at 3.5 µm/px), "
            "which hold better than the CNN on coarse images but see no cell detail. ")


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
    if getattr(engine, "index", None) is not None:
        engine.index.refresh()  # every session searches it now
    return f"Added to collection '{index.name}' on disk ({len(index.slides())} slides now)"


# -- exports -------------------------------------------------------------------------------
def scored_anndata(result: SearchResult, slide: str) -> ad.AnnData:
    """A copy of ``slide``'s AnnData with the result's scores in ``obs`` and the query in ``uns``
    (:func:`spotwhisper.api.tl.write_search`, key ``"search"``: what ``sw.tl.search`` writes)."""
    from spotwhisper.api.tl import write_search

    hits = next((h for h in result.slides if h.slide == slide), None)
    if hits is None:
        raise KeyError(f"slide {slide!r} is not in this result (slides: {', '.join(h.slide for h in result.slides)})")
    return write_search(hits.adata.copy(), result, slide, key_added=keys.SEARCH_INFO)


def export_result(result: SearchResult, slide: str, folder: Path) -> list[Path]:
    """Write CSV (all searched slides), ``.h5ad`` and GeoJSON (``slide``) into ``folder/exports/``,
    under a name (query + slide) no earlier export in that folder uses."""
    out = folder / "exports"
    suffixes = ["_spots.csv", ".h5ad", ".geojson"]
    stem = unique_path(out, f"{slug(result.query.text)}_{slug(slide, 40, 'slide')}", suffixes)
    table = pd.concat([h.spot_table() for h in result.slides], ignore_index=True)
    hits = next(h for h in result.slides if h.slide == slide)
    csv, h5ad, geo = (stem.with_name(stem.name + s) for s in suffixes)
    return [
        write_csv(table, csv),
        write_h5ad(scored_anndata(result, slide), h5ad),
        write_geojson(hits.regions, result.query.text, geo, slide=slide),
    ]


def export_proteins(hits, query: str, folder: Path) -> Path:
    """The slide's virtual protein panel as an OME-TIFF on its H&E grid in ``folder/exports/``,
    named ``<slide>_<query>_virtual_proteins.ome.tif`` (a name no earlier export uses)."""
    from spotwhisper.proteins import export_panel

    stem = unique_path(folder / "exports", f"{slug(hits.slide, 40, 'slide')}_{slug(query)}_virtual_proteins",
                       [".ome.tif"])
    return export_panel(hits.adata, stem.with_name(stem.name + ".ome.tif"))
