"""What a her2st data directory holds, per section, without building full AnnData objects.

Used by ``spotwhisper data info`` and ``spotwhisper demo``. Counts files are scanned for their
header and row names only, images are sized from their file headers (never decoded), so the
whole collection is summarised in a few seconds.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..datadir import her2st_root
from .her2st import _spot_ids, image_path, list_sections
from .spatial import estimate_spacing_px
from .technologies import ST

#: Columns of :func:`describe_sections`, in order.
COLUMNS = [
    "section", "patient", "spots", "genes", "image", "width_px", "height_px", "mpp",
    "labels", "clusters", "deconvolution",
]  # fmt: skip


def _counts_shape(path: Path) -> tuple[pd.Index, int]:
    """Row names (``<x>x<y>``) and number of genes of a her2st counts ``.tsv.gz``."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [line.split("\t", 1)[0] for line in fh if line.strip()]
    return pd.Index(rows), len(header) - 1


def _deconv_sections(root: Path, tier: str = "major") -> set[str]:
    path = root / "res" / "ST-deconv" / "props" / f"{tier}.zip"
    if not path.exists():
        return set()
    with zipfile.ZipFile(path) as zf:
        return {Path(n).name.split("-proportion")[0] for n in zf.namelist() if n.endswith("-proportion.tsv")}


def _image_size(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    with Image.open(path) as im:  # reads the header only
        return im.size


def describe_sections(
    data_dir: str | Path | None,
    sections: list[str] | None = None,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per section with :data:`COLUMNS`.

    ``spots`` are the spots that have both counts and a position (as :func:`read_her2st` keeps
    them); ``width_px``/``height_px`` the H&E image size and ``mpp`` its µm per pixel from the
    200 µm ST spot spacing (``NaN``/``None`` without an image); ``labels``/``clusters``/
    ``deconvolution`` tell whether pathologist labels, expression clusters and cell-type
    proportions exist for the section. Unknown ``sections`` raise ``KeyError`` naming them.
    """
    root = her2st_root(data_dir)
    known = list_sections(root)
    sections = list(sections) if sections else known
    unknown = [s for s in sections if s not in known]
    if unknown:
        raise KeyError(f"unknown section(s) {unknown} in {root} (sections here: {', '.join(known)})")
    deconv = _deconv_sections(root)
    rows = []
    for s in tqdm(sections, desc="sections", disable=not progress):
        count_ids, n_genes = _counts_shape(root / "data" / "ST-cnts" / f"{s}.tsv.gz")
        spots_path = root / "data" / "ST-spotfiles" / f"{s}_selection.tsv"
        if spots_path.exists():
            table = pd.read_csv(spots_path, sep="\t")
            table.index = _spot_ids(table["x"], table["y"])
            matched = table.loc[table.index.intersection(count_ids)]
        else:
            matched = pd.DataFrame(columns=["pixel_x", "pixel_y"])
        img = image_path(root, s)
        size = _image_size(img)
        mpp = np.nan
        if size is not None and len(matched) >= 2:
            mpp = ST.spot_spacing_um / estimate_spacing_px(matched[["pixel_x", "pixel_y"]].to_numpy(dtype=float))
        rows.append(
            {
                "section": s,
                "patient": s[0],
                "spots": len(matched),
                "genes": int(n_genes),
                "image": img.name if img is not None else None,
                "width_px": size[0] if size else None,
                "height_px": size[1] if size else None,
                "mpp": float(mpp),
                "labels": (root / "data" / "ST-pat" / "lbl" / f"{s}_labeled_coordinates.tsv").exists(),
                "clusters": (root / "res" / "ST-cluster" / "lbl" / f"{s}-cluster-annotation.tsv.gz").exists(),
                "deconvolution": s in deconv,
            }
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("width_px", "height_px"):
        out[col] = out[col].astype("Int64")
    return out


def shared_files(data_dir: str | Path | None) -> dict[str, Path | None]:
    """Collection-wide her2st resources → their path, or ``None`` when absent."""
    root = her2st_root(data_dir)
    paths = {
        "cluster annotations (motivation.csv)": root / "res" / "ST-cluster" / "motivation.csv",
        "cell-type proportions, major tier": root / "res" / "ST-deconv" / "props" / "major.zip",
        "cell-type proportions, minor tier": root / "res" / "ST-deconv" / "props" / "minor.zip",
        "TLS signature": root / "res" / "TLS-pred" / "tls-signature.tsv.gz",
    }
    return {k: (p if p.exists() else None) for k, p in paths.items()}
