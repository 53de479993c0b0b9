"""Stage 1 — read slides and spot data into AnnData (scanpy/squidpy conventions).

See :mod:`spotwhisper.keys` for where everything is stored.
"""

from .anndata_io import read_h5ad, write_h5ad
from .describe import describe_sections
from .her2st import (
    SectionNotFoundError,
    image_path,
    list_sections,
    read_her2st,
    read_her2st_collection,
    section_files,
    sections_fingerprint,
    tls_signature,
)
from .slide import ArraySlide, Slide, SlideError, open_slide
from .spatial import estimate_spacing_px, library_ids, open_source_slide, spatial_info
from .visium import read_visium

__all__ = [
    "ArraySlide",
    "SectionNotFoundError",
    "Slide",
    "SlideError",
    "describe_sections",
    "estimate_spacing_px",
    "image_path",
    "library_ids",
    "list_sections",
    "open_slide",
    "open_source_slide",
    "read_h5ad",
    "read_her2st",
    "read_her2st_collection",
    "read_visium",
    "section_files",
    "sections_fingerprint",
    "spatial_info",
    "tls_signature",
    "write_h5ad",
]
