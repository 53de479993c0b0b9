"""Rows beside the vectors: slide, spot, coordinates, tile box and chosen obs columns.

Coordinates are slide pixels (the image tiles are cut from): ``obsm["spatial"]`` times the
library's ``source_image_scale`` (1 for her2st). The tile box is the spot centre ± half the spot
spacing, the default spot tile of :mod:`spotwhisper.tiles`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..atomic import atomic_file
from ..io.spatial import estimate_spacing_px, library_ids
from .errors import BadVectorsError, IndexFormatError

log = logging.getLogger(__name__)

#: Columns every metadata table has (``id`` is added when vectors enter a collection).
BASE_COLUMNS = ["slide", "spot", "x", "y", "x0", "y0", "x1", "y1"]
ID = "id"


@dataclass
class SlideData:
    """Vectors of one slide for one or more routes, with one metadata row per vector.

    ``vectors[route]`` is ``(n, D_route)``; ``metadata`` has ``n`` rows with at least ``spot``
    (missing coordinate columns are filled with NaN).
    """

    slide: str
    metadata: pd.DataFrame
    vectors: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.metadata)
        for route, vec in self.vectors.items():
            if np.ndim(vec) != 2 or len(vec) != n:
                raise BadVectorsError(
                    f"slide {self.slide!r}, route {route!r}: vectors of shape {np.shape(vec)} for {n} metadata rows"
                )
        meta = self.metadata.reset_index(drop=True).copy()
        if "spot" not in meta:
            raise IndexFormatError(
                f"slide {self.slide!r}: metadata has no 'spot' column (columns: {list(meta.columns)})"
            )
        meta["slide"] = self.slide
        for col in BASE_COLUMNS[2:]:
            if col not in meta:
                meta[col] = np.nan
        self.metadata = meta[BASE_COLUMNS + [c for c in meta.columns if c not in BASE_COLUMNS]]

    def __len__(self) -> int:
        return len(self.metadata)


def _slide_scale_and_side(adata: ad.AnnData, library: str | None) -> tuple[float, float | None]:
    """``(source_image_scale, spot spacing in full-res px or None)`` of one library."""
    info = adata.uns.get(keys.SPATIAL, {}).get(library, {}) if library else {}
    scale = float(info.get("metadata", {}).get(keys.SOURCE_IMAGE_SCALE, 1.0))
    side = info.get("scalefactors", {}).get(keys.SPOT_SPACING)
    return scale, (float(side) if side else None)


def _plain(col: pd.Series) -> pd.Series:
    """Categoricals and objects as strings (missing stays missing), so parquet stores any column."""
    if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
        return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))
    return col


def slides_from_anndata(
    adata: ad.AnnData,
    routes: Mapping[str, str],
    *,
    columns: Sequence[str] = (),
    slide: str | None = None,
    tile_side_px: float | None = None,
) -> list[SlideData]:
    """Split ``adata`` into one :class:`SlideData` per slide (``obs["section"]``, else ``slide``, else the library id).

    ``routes`` maps route name → obsm key holding that route's embeddings ``(n, D)``; ``columns``
    are obs columns copied into the metadata when present. ``tile_side_px`` (slide px) overrides
    the spot spacing from ``uns["spatial"]``.
    """
    missing = {r: k for r, k in routes.items() if k not in adata.obsm}
    if missing:
        raise KeyError(
            f"AnnData has no obsm {sorted(missing.values())} for route(s) {sorted(missing)} "
            f"(obsm keys: {sorted(adata.obsm)})"
        )
    if keys.SECTION in adata.obs:
        groups = adata.obs[keys.SECTION].astype(str).to_numpy()
    else:
        libs = library_ids(adata)
        name = slide or (libs[0] if len(libs) == 1 else None)
        if name is None:
            raise ValueError(
                f"cannot tell the slide: no obs[{keys.SECTION!r}] and {len(libs)} libraries in uns['spatial']; "
                "pass slide="
            )
        groups = np.full(adata.n_obs, name, dtype=object)
    out = []
    for name in pd.unique(groups):
        rows = np.flatnonzero(groups == name)
        sub = adata[rows]
        scale, spacing = _slide_scale_and_side(adata, str(name))
        meta = pd.DataFrame({"spot": sub.obs_names.astype(str).to_numpy()})
        if keys.SPATIAL in sub.obsm:
            xy = np.asarray(sub.obsm[keys.SPATIAL], dtype=np.float64) * scale
            if tile_side_px is not None:
                side = tile_side_px
            elif spacing is not None:
                side = spacing * scale
            else:
                side = estimate_spacing_px(xy) if len(xy) > 1 else np.nan
            meta["x"], meta["y"] = xy[:, 0], xy[:, 1]
            meta["x0"], meta["y0"] = xy[:, 0] - side / 2, xy[:, 1] - side / 2
            meta["x1"], meta["y1"] = xy[:, 0] + side / 2, xy[:, 1] + side / 2
        for col in columns:
            if col in sub.obs:
                meta[col] = _plain(sub.obs[col]).to_numpy()
        vectors = {r: np.asarray(sub.obsm[k]) for r, k in routes.items()}
        out.append(SlideData(str(name), meta, vectors))
    return out


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` (parquet) atomically."""
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a metadata table; :class:`IndexFormatError` names the file when it is missing or broken."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{path}: unreadable metadata table ({err})") from err
    if ID not in frame or "slide" not in frame:
        raise IndexFormatError(f"{path}: metadata table lacks the 'id'/'slide' columns")
    return frame
