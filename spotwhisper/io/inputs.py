"""Resolve what a user names on the command line: a her2st section, an ``.h5ad`` or an image."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from .. import keys
from .anndata_io import read_h5ad
from .her2st import read_her2st
from .slide import OPENSLIDE_SUFFIXES, PIL_SUFFIXES, TIFF_SUFFIXES, Slide, open_slide
from .spatial import open_source_slide
from .visium import is_spaceranger_folder, read_visium

SECTION_RE = re.compile(r"^[A-Z]\d+$")
IMAGE_SUFFIXES = PIL_SUFFIXES | TIFF_SUFFIXES | OPENSLIDE_SUFFIXES


@dataclass
class SlideInput:
    """A slide with, when known, its spots: ``adata`` (``None`` for a bare image) and ``scale``
    mapping ``obsm["spatial"]`` to slide pixels."""

    name: str
    slide: Slide | None
    adata: ad.AnnData | None
    scale: float = 1.0


def load_input(
    spec: str | Path,
    data_dir: str | Path | None = None,
    mpp: float | None = None,
    require_image: bool = True,
) -> SlideInput:
    """Open ``spec``: a her2st section id (``"C2"``), an ``.h5ad`` with ``uns["spatial"]``, a Space
    Ranger output folder (with or without counts) or an image.

    ``mpp`` (µm per pixel) overrides what the files say; for a Space Ranger folder it is µm per
    full-resolution pixel (see :func:`~spotwhisper.io.visium.read_visium`, e.g. 200 µm ST arrays).
    With ``require_image`` a section or AnnData without an H&E image is an error.
    """
    text = str(spec)
    path = Path(text)
    if path.is_dir() and is_spaceranger_folder(path, require_counts=False):
        adata = read_visium(path, mpp=mpp, require_counts=False)
        name = str(adata.obs[keys.SECTION].iloc[0])
        mpp = None  # read_visium applied it to full-resolution pixels (the source image may be the hires PNG)
    elif path.suffix.lower() == ".h5ad":
        adata = read_h5ad(path)
        name = path.stem
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        slide = open_slide(path, mpp=mpp)
        return SlideInput(name=path.stem, slide=slide, adata=None)
    elif SECTION_RE.match(text) and not path.exists():
        adata = read_her2st(data_dir, text)
        name = text
    else:
        raise FileNotFoundError(
            f"{text}: not a her2st section id (like C2), an .h5ad file, a Space Ranger output folder or an "
            f"image ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    try:
        slide, scale = open_source_slide(adata)
    except (FileNotFoundError, KeyError, ValueError) as err:
        if require_image:
            raise FileNotFoundError(f"{text}: has no H&E image to cut tiles from ({err})") from err
        return SlideInput(name=name, slide=None, adata=adata)
    if mpp is not None:
        slide.set_mpp(mpp)
    return SlideInput(name=name, slide=slide, adata=adata, scale=scale)


#: column names accepted for the spot id in a spot table (first match wins, case-insensitive)
SPOT_ID_COLUMNS = ("barcode", "id", "spot", "spot_id")


def read_spot_table(table: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The spot centres of a CSV spot table → ``(xy (n, 2) float px, ids (n,) str, id column or None)``.

    The CSV needs columns ``x`` and ``y`` (case-insensitive; spot centres in full-resolution
    pixels) and may name spots in ``barcode``/``id``/``spot``/``spot_id``. Raises ``ValueError``
    naming the file for a table that cannot be used: unreadable, no ``x``/``y``, a missing or
    non-numeric centre, fewer than two spots, repeated spot ids, or spots sharing one centre.
    """
    import pandas as pd

    table = Path(table)
    try:
        df = pd.read_csv(table)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{table}: not a readable CSV spot table ({err})") from err
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "x" not in cols or "y" not in cols:
        raise ValueError(f"{table}: a spot table needs columns x and y (full-resolution pixels); found {list(df.columns)}")
    xy = df[[cols["x"], cols["y"]]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(f"{table}: {int(bad.sum())} row(s) with a missing or non-numeric x/y (first: row {int(np.argmax(bad)) + 2})")
    if len(xy) < 2:
        raise ValueError(f"{table}: needs at least two spots, found {len(xy)}")
    id_col = next((cols[c] for c in SPOT_ID_COLUMNS if c in cols), None)
    ids = df[id_col].astype(str).to_numpy() if id_col is not None else np.array([f"spot_{i}" for i in range(len(xy))])
    if len(set(ids)) != len(ids):
        raise ValueError(f"{table}: spot ids in column {id_col!r} are not unique")
    centres, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.argmax(counts))
        rows = np.flatnonzero((xy == centres[k]).all(axis=1)) + 2  # CSV line numbers (header = line 1)
        raise ValueError(f"{table}: {int(counts[k])} spots have the same centre (x, y) = ({centres[k][0]:g}, "
                         f"{centres[k][1]:g}) (rows {rows[0]}, {rows[1]}{', …' if len(rows) > 2 else ''}); every spot "
                         "needs its own position")
    return xy, ids, id_col


def load_spot_table(
    table: str | Path,
    image: str | Path,
    name: str | None = None,
    mpp: float | None = None,
) -> SlideInput:
    """An image plus a CSV of spot centres (checked by :func:`read_spot_table`) → :class:`SlideInput`
    with spots. Spot spacing is the median nearest-neighbour distance; ``mpp`` (µm/px) overrides
    the image's metadata. Raises ``ValueError`` naming the file for a table that cannot be used.
    """
    import pandas as pd
    from scipy import sparse

    from .spatial import attach_image, estimate_spacing_px

    xy, ids, id_col = read_spot_table(table)
    slide = open_slide(image, mpp=mpp)
    name = name or Path(image).stem
    obs = pd.DataFrame({keys.SECTION: pd.Categorical([name] * len(xy))}, index=pd.Index(ids, dtype=str))
    if id_col is not None:
        obs[keys.BARCODE] = ids
    adata = ad.AnnData(X=sparse.csr_matrix((len(xy), 0), dtype=np.float32), obs=obs)
    adata.obsm[keys.SPATIAL] = xy
    spacing = estimate_spacing_px(xy)
    attach_image(adata, name, slide, mpp=slide.mpp, spot_spacing_px=spacing, spot_diameter_px=None, technology="spot table")
    return SlideInput(name=name, slide=slide, adata=adata, scale=1.0)
