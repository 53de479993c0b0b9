"""Resolve what a user names on the command line: a her2st section, an ``.h5ad`` or an image."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anndata as ad

from .anndata_io import read_h5ad
from .her2st import read_her2st
from .slide import PIL_SUFFIXES, TIFF_SUFFIXES, OPENSLIDE_SUFFIXES, Slide, open_slide
from .spatial import open_source_slide

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
    """Open ``spec``: a her2st section id (``"C2"``), an ``.h5ad`` with ``uns["spatial"]`` or an image.

    ``mpp`` (µm per pixel) overrides what the files say. With ``require_image`` a section or
    AnnData without an H&E image is an error.
    """
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".h5ad":
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
            f"{text}: not a her2st section id (like C2), an .h5ad file or an image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
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
