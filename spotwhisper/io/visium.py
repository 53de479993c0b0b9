"""Read 10x Genomics Space Ranger outputs (Visium, Visium HD bins) into AnnData.

A Space Ranger ``outs/`` folder holds the counts (``filtered_feature_bc_matrix.h5`` or the
``filtered_feature_bc_matrix/`` mtx folder) and ``spatial/`` with the spot positions
(``tissue_positions.csv`` with a header, the older header-less ``tissue_positions_list.csv``, or
``tissue_positions.parquet``), ``scalefactors_json.json`` and the ``hires``/``lowres`` PNGs.

The result follows :mod:`spotwhisper.keys`: raw counts (CSR float32) in ``X``, gene symbols as
``var_names`` (made unique) with the Ensembl ids in ``var["gene_ids"]``, spot centres in
full-resolution pixels in ``obsm["spatial"]`` and the image in ``uns["spatial"][library_id]``.
Tiles are cut from the best image there is: the full-resolution image (``fullres_image``, or one
found beside the outputs whose size matches the scale factors), else the hires PNG, else lowres.

Spots are joined on barcode; what does not join is reported in ``uns["visium_join"]`` and a
warning — never dropped silently.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from .. import keys
from .slide import SUPPORTED, Slide, SlideError, open_slide
from .spatial import attach_image, estimate_spacing_px
from .technologies import SPACERANGER_SPOT_DIAMETER_UM, ST, VISIUM, Technology

log = logging.getLogger(__name__)

MATRIX_H5 = "filtered_feature_bc_matrix.h5"
MATRIX_DIR = "filtered_feature_bc_matrix"
#: Position files in the order they are looked for inside ``spatial/``.
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv", "tissue_positions.parquet")
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
SCALEFACTORS_JSON = "scalefactors_json.json"
HIRES_PNG = "tissue_hires_image.png"
LOWRES_PNG = "tissue_lowres_image.png"
#: Space Ranger side images that are never the H&E full-resolution image.
NOT_FULLRES = ("cytassist", "fiducial", "detected_tissue", "aligned_tissue", "tissue_hires", "tissue_lowres")
#: A full-resolution candidate must match the size implied by the PNG and its scale factor this closely.
FULLRES_SIZE_TOLERANCE = 0.01
BIN_SIZE_KEY = "bin_size_um"  # Visium HD scale factor: side of one bin in µm
#: a measured spot pitch this close (relative) to a platform's is taken as that platform
PITCH_TOLERANCE = 0.25
#: where the µm/px came from, as the log line says it
MPP_SOURCES = {
    "scalefactors": "microns_per_pixel of scalefactors_json.json",
    "user": "given (mpp= / --mpp)",
    "spot_diameter": "spot_diameter_fullres of scalefactors_json.json (Space Ranger's 65 µm spot)",
    "spot_spacing": "estimated from the spot spacing, assuming Visium's 100 µm pitch; pass mpp= (--mpp) for other arrays",
    "unknown": "unknown",
}


def _outs_folder(path: Path) -> Path:
    """``path`` itself, or its ``outs/`` subfolder when the matrix lives there."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Space Ranger output folder")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder; give the Space Ranger outs/ folder (or the one holding it)")
    if not has_counts_matrix(path) and not (path / "spatial").is_dir() and (path / "outs").is_dir():
        return path / "outs"
    return path


def has_counts_matrix(folder: Path) -> bool:
    """Whether ``folder`` holds a Space Ranger counts matrix (``.h5`` or the mtx folder)."""
    return (folder / MATRIX_H5).exists() or (folder / MATRIX_DIR).is_dir()


def _has_positions(spatial_dir: Path) -> bool:
    return any((spatial_dir / n).exists() for n in POSITION_FILES)


def is_spaceranger_folder(path: str | Path, require_counts: bool = False) -> bool:
    """True for a folder holding Space Ranger outputs: ``spatial/`` beside the counts, or an ``outs/``
    that does, or — H&E only, unless ``require_counts`` — ``spatial/`` with a spot-position table."""
    p = Path(path)
    if not p.is_dir():
        return False
    for d in (p, p / "outs"):
        if (d / "spatial").is_dir() and (has_counts_matrix(d) or (not require_counts and _has_positions(d / "spatial"))):
            return True
    return False


def read_counts(folder: Path) -> tuple[ad.AnnData, Path]:
    """Counts of a Space Ranger folder → ``(AnnData, file read)``; gene expression features only.

    ``X`` is ``(n_barcodes, n_genes)`` CSR float32 raw counts; ``var_names`` are unique symbols.
    """
    import scanpy as sc

    h5, mtx = folder / MATRIX_H5, folder / MATRIX_DIR
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*names are not unique.*")
        if h5.exists():
            source = h5
            try:
                adata = sc.read_10x_h5(h5)
            except Exception as err:  # h5py/scanpy raise OSError, KeyError, bare Exception
                raise ValueError(f"{h5}: not a readable 10x HDF5 feature-barcode matrix ({err})") from err
        elif mtx.is_dir():
            source = mtx
            needed = [mtx / n for n in ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz")]
            legacy = [mtx / n for n in ("matrix.mtx", "barcodes.tsv", "genes.tsv")]
            if not all(p.exists() for p in needed) and not all(p.exists() for p in legacy):
                missing = [p.name for p in needed if not p.exists()]
                raise FileNotFoundError(f"{mtx}: incomplete 10x matrix folder, missing {missing}")
            try:
                adata = sc.read_10x_mtx(mtx, var_names="gene_symbols", make_unique=True)
            except Exception as err:
                raise ValueError(f"{mtx}: not a readable 10x matrix folder ({err})") from err
        else:
            raise FileNotFoundError(
                f"{folder}: no counts found; expected {MATRIX_H5} or {MATRIX_DIR}/ "
                "(matrix.mtx.gz, barcodes.tsv.gz, features.tsv.gz) from Space Ranger"
            )
    adata.var_names_make_unique()
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    return adata, source


def read_positions(spatial_dir: Path) -> tuple[pd.DataFrame, Path]:
    """Spot positions → ``(table indexed by barcode, file read)`` with :data:`POSITION_COLUMNS`."""
    found = [spatial_dir / n for n in POSITION_FILES if (spatial_dir / n).exists()]
    if not found:
        raise FileNotFoundError(f"{spatial_dir}: no spot positions; expected one of {', '.join(POSITION_FILES)}")
    path = found[0]
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            with open(path, encoding="utf-8") as fh:
                first = fh.readline()
            has_header = first.split(",")[0].strip().strip('"').lower() == "barcode"
            table = pd.read_csv(path, header=0 if has_header else None)
            if not has_header:
                if table.shape[1] != len(POSITION_COLUMNS):
                    raise ValueError(f"expected {len(POSITION_COLUMNS)} columns, found {table.shape[1]}")
                table.columns = POSITION_COLUMNS
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: not a readable Space Ranger position table ({err})") from err
    missing = set(POSITION_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: expected columns {POSITION_COLUMNS}; missing {sorted(missing)}")
    table = table[POSITION_COLUMNS].copy()
    table["barcode"] = table["barcode"].astype(str)
    if table["barcode"].duplicated().any():
        raise ValueError(f"{path}: duplicated barcodes {table['barcode'][table['barcode'].duplicated()].head().tolist()}")
    return table.set_index("barcode"), path


def read_scalefactors(spatial_dir: Path) -> dict[str, float]:
    """``scalefactors_json.json`` as a dict (empty when the file is absent)."""
    path = spatial_dir / SCALEFACTORS_JSON
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON scale-factor file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of scale factors")
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read_png(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as err:
        raise SlideError(f"{path}: image is truncated or corrupt ({err})") from err


def _expected_fullres_size(spatial_dir: Path, scalefactors: dict[str, float]) -> tuple[float, float] | None:
    for png, key in ((HIRES_PNG, keys.HIRES_SCALEF), (LOWRES_PNG, keys.LOWRES_SCALEF)):
        if (spatial_dir / png).exists() and scalefactors.get(key):
            with Image.open(spatial_dir / png) as im:
                w, h = im.size
            return w / scalefactors[key], h / scalefactors[key]
    return None


def _size_matches(path: Path, expected: tuple[float, float]) -> bool:
    try:
        with open_slide(path) as slide:
            w, h = slide.dimensions
    except SlideError:
        return False
    ew, eh = expected
    return abs(w - ew) <= FULLRES_SIZE_TOLERANCE * ew + 1 and abs(h - eh) <= FULLRES_SIZE_TOLERANCE * eh + 1


def find_fullres_image(folder: Path, scalefactors: dict[str, float]) -> Path | None:
    """A full-resolution H&E image beside the outputs, or ``None``.

    Looks in ``folder``, ``folder/image(s)``, its parent and ``parent/image`` for a slide file whose
    size equals (within :data:`FULLRES_SIZE_TOLERANCE`) the PNG size divided by its scale factor.
    Only an unambiguous single match is returned; several matches give a warning and ``None``.
    """
    expected = _expected_fullres_size(folder / "spatial", scalefactors)
    if expected is None:
        return None
    dirs = [folder, folder / "image", folder / "images", folder.parent, folder.parent / "image"]
    candidates: list[Path] = []
    for d in dict.fromkeys(p.resolve() for p in dirs if p.is_dir()):
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in SUPPORTED and not any(s in p.name.lower() for s in NOT_FULLRES):
                candidates.append(p)
    matches = [p for p in candidates if _size_matches(p, expected)]
    if len(matches) > 1:
        warnings.warn(
            f"{folder}: several images match the full-resolution size {expected[0]:.0f}×{expected[1]:.0f} px "
            f"({[str(m) for m in matches]}); using the hires PNG — pass fullres_image= to choose",
            stacklevel=3,
        )
        return None
    return matches[0] if matches else None


def _join(counts: ad.AnnData, positions: pd.DataFrame, matrix_path: Path, positions_path: Path) -> dict:
    """Barcodes shared by the counts and the in-tissue positions, plus what did not join."""
    bc = counts.obs_names
    in_tissue = positions.index[positions["in_tissue"].astype(int) == 1]
    matched = bc.intersection(in_tissue, sort=False)
    report = {
        "n_count_barcodes": len(bc),
        "n_in_tissue_positions": len(in_tissue),
        "n_matched": len(matched),
        "counts_without_position": bc.difference(positions.index, sort=False).tolist(),
        "counts_outside_tissue": bc.intersection(positions.index.difference(in_tissue), sort=False).tolist(),
        "positions_without_counts": in_tissue.difference(bc, sort=False).tolist(),
        "matrix_source": str(matrix_path),
        "positions_source": str(positions_path),
    }
    if len(matched) == 0:
        raise ValueError(
            f"{matrix_path} and {positions_path} share no in-tissue barcode (counts have e.g. "
            f"{bc[:3].tolist()}, positions {positions.index[:3].tolist()}); are they from the same run?"
        )
    left_out = [report[k] for k in ("counts_without_position", "counts_outside_tissue", "positions_without_counts")]
    if any(left_out):
        warnings.warn(
            f"Visium {positions_path.parent.parent.name}: {len(matched)} spots matched; "
            f"{len(left_out[0])} barcode(s) with counts but no position, {len(left_out[1])} with counts outside "
            f"the tissue and {len(left_out[2])} in-tissue position(s) without counts are left out "
            "(listed in uns['visium_join'])",
            stacklevel=3,
        )
    report["matched"] = matched
    return report


def _positions_only(positions: pd.DataFrame, positions_path: Path) -> tuple[ad.AnnData, dict]:
    """An H&E-only Space Ranger folder (no counts): the in-tissue spots as an AnnData with no genes
    (``X`` ``(n, 0)``), and a join report that says so."""
    in_tissue = positions.index[positions["in_tissue"].astype(int) == 1]
    if len(in_tissue) == 0:
        raise ValueError(f"{positions_path}: no spot is marked in tissue (in_tissue = 1)")
    log.info("%s: no counts matrix beside the positions; reading the %d in-tissue spots as H&E only",
             positions_path.parent.parent, len(in_tissue))
    adata = ad.AnnData(X=sparse.csr_matrix((len(in_tissue), 0), dtype=np.float32), obs=pd.DataFrame(index=in_tissue))
    report = {"n_count_barcodes": 0, "n_in_tissue_positions": len(in_tissue), "n_matched": len(in_tissue),
              "counts_without_position": [], "counts_outside_tissue": [], "positions_without_counts": [],
              "matrix_source": "none (H&E only)", "positions_source": str(positions_path)}
    return adata, report


def _technology(scalefactors: dict[str, float]) -> Technology:
    bin_um = scalefactors.get(BIN_SIZE_KEY)
    if bin_um:
        return Technology("Visium HD", spot_diameter_um=bin_um, spot_spacing_um=bin_um)
    return VISIUM


def _pitch_technology(tech: Technology, spacing_px: float | None, mpp_full: float | None, mpp_source: str,
                      where: str) -> tuple[Technology, float | None]:
    """The platform the measured spot pitch says (ST arrays in Space Ranger layout have 200 µm) → ``(tech, pitch µm)``.

    Only a µm/px that does not itself come from the spot spacing can measure the pitch.
    """
    if not (spacing_px and mpp_full) or mpp_source in ("spot_spacing", "spot_diameter") or tech is not VISIUM:
        return tech, None
    pitch = spacing_px * mpp_full
    for cand in (VISIUM, ST):
        if abs(pitch - cand.spot_spacing_um) <= PITCH_TOLERANCE * cand.spot_spacing_um:
            if cand is not VISIUM:
                log.info("%s: spot pitch %.0f µm is %s's (%.0f µm), not Visium's 100 µm; tiles follow the measured pitch",
                         where, pitch, cand.name, cand.spot_spacing_um)
            return cand, pitch
    warnings.warn(f"{where}: spot pitch {pitch:.0f} µm at {mpp_full:.3f} µm/px matches no known array (Visium 100 µm, "
                  "ST 200 µm); is the µm/px right?", stacklevel=3)
    return tech, pitch


def _microns_per_pixel(
    scalefactors: dict[str, float], mpp: float | None, spacing_px: float | None, tech: Technology, where: Path
) -> tuple[float | None, str]:
    """µm per full-resolution pixel and where it came from: scale factors, user, spot spacing."""
    sf_mpp = scalefactors.get(keys.MPP)
    if sf_mpp:
        if mpp and abs(mpp - sf_mpp) > 0.05 * sf_mpp:
            warnings.warn(
                f"{where}: mpp={mpp} differs from Space Ranger's microns_per_pixel={sf_mpp:.4f}; using the latter", stacklevel=3
            )
        return float(sf_mpp), "scalefactors"
    if mpp is not None:
        if not mpp > 0:
            raise ValueError(f"microns per pixel must be positive, got {mpp}")
        return float(mpp), "user"
    diameter = scalefactors.get(keys.SPOT_DIAMETER)
    if diameter and tech is VISIUM and diameter > 0:
        return SPACERANGER_SPOT_DIAMETER_UM / diameter, "spot_diameter"
    if spacing_px:
        return tech.spot_spacing_um / spacing_px, "spot_spacing"
    warnings.warn(f"{where}: microns per pixel unknown (no scale factor, no mpp, < 2 spots); pass mpp=", stacklevel=3)
    return None, "unknown"


def read_visium(
    path: str | Path,
    *,
    library_id: str | None = None,
    fullres_image: str | Path | None = None,
    mpp: float | None = None,
    hires_max_side: int = 2000,
    patient: str | None = None,
    require_counts: bool = False,
) -> ad.AnnData:
    """Read one Space Ranger output folder (``outs/`` or the folder holding it).

    Parameters
    ----------
    path
        Folder with ``filtered_feature_bc_matrix(.h5)`` and ``spatial/``.
    library_id
        Section id (``obs["section"]``, key in ``uns["spatial"]``); default: the folder name
        (the parent's when the folder is ``outs``).
    fullres_image
        The full-resolution H&E image (TIFF/JPEG) the positions refer to. When ``None``, one is
        looked for beside the outputs (:func:`find_fullres_image`); else tiles come from the
        hires PNG (or lowres) with coordinates scaled by its scale factor.
    mpp
        µm per full-resolution pixel, used when the scale factors carry no ``microns_per_pixel``;
        when neither gives it, it is estimated from the spot spacing (Visium: 100 µm). Give it for
        folders whose spot pitch is not Visium's (older ST arrays saved in Space Ranger layout
        have 200 µm): the pitch is then measured, the technology set from it, and tiles follow it.
        The µm/px used and its source are logged and kept in ``uns["spatial"][lib]["metadata"]["mpp_source"]``.
    hires_max_side
        Longer side (px) of the display image made when there is no hires PNG.
    require_counts
        Refuse a folder without a counts matrix (by default such an H&E-only folder is read: every
        in-tissue position is a spot and ``X`` is empty, ``(n_spots, 0)``).
    patient
        ``obs["patient"]``; default: the library id.

    Returns
    -------
    AnnData ``(n_spots, n_genes)``; join report in ``uns["visium_join"]``.
    """
    folder = _outs_folder(Path(path))
    if library_id is None:
        library_id = folder.parent.name if folder.name == "outs" else folder.name
    spatial_dir = folder / "spatial"
    if not spatial_dir.is_dir():
        raise FileNotFoundError(f"{folder}: no spatial/ folder with spot positions (Space Ranger output expected)")
    positions, positions_path = read_positions(spatial_dir)
    scalefactors = read_scalefactors(spatial_dir)
    if require_counts or has_counts_matrix(folder):
        counts, matrix_path = read_counts(folder)
        join = _join(counts, positions, matrix_path, positions_path)
        matched = join.pop("matched")
    else:
        counts, join = _positions_only(positions, positions_path)
        matched = counts.obs_names

    pos = positions.loc[matched]
    adata = counts[matched].copy()
    adata.obs_names = pd.Index([f"{library_id}_{b}" for b in matched], name="spot")
    adata.obs[keys.SECTION] = library_id
    adata.obs[keys.PATIENT] = patient or library_id
    adata.obs[keys.ARRAY_X] = pos["array_col"].to_numpy().astype(int)
    adata.obs[keys.ARRAY_Y] = pos["array_row"].to_numpy().astype(int)
    adata.obs[keys.BARCODE] = matched.to_numpy()
    adata.obsm[keys.SPATIAL] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    adata.uns[keys.VISIUM_JOIN] = join

    tech = _technology(scalefactors)
    coords = adata.obsm[keys.SPATIAL]
    spacing = estimate_spacing_px(coords) if len(coords) >= 2 else None
    mpp_full, mpp_source = _microns_per_pixel(scalefactors, mpp, spacing, tech, folder)
    tech, pitch = _pitch_technology(tech, spacing, mpp_full, mpp_source, f"Visium {library_id}")
    log.info("Visium %s: %s µm/px at full resolution (%s)%s", library_id,
             f"{mpp_full:.4f}" if mpp_full else "unknown", MPP_SOURCES[mpp_source],
             f"; spot pitch {pitch:.0f} µm" if pitch else "")
    if spacing is None and mpp_full:
        spacing = tech.spot_spacing_um / mpp_full
    diameter = scalefactors.get(keys.SPOT_DIAMETER) or (tech.spot_diameter_um / mpp_full if mpp_full else None)

    slide, scale, kind = _source_slide(folder, spatial_dir, scalefactors, fullres_image, mpp_full)
    hires = _read_png(spatial_dir / HIRES_PNG) if scalefactors.get(keys.HIRES_SCALEF) else None
    attach_image(
        adata,
        library_id,
        slide,
        mpp=mpp_full,
        spot_spacing_px=spacing,
        spot_diameter_px=diameter,
        technology=tech.name,
        hires_max_side=hires_max_side,
        source_scale=scale,
        hires=hires,
        hires_scale=scalefactors.get(keys.HIRES_SCALEF),
    )
    info = adata.uns[keys.SPATIAL][library_id]
    lowres = _read_png(spatial_dir / LOWRES_PNG) if scalefactors.get(keys.LOWRES_SCALEF) else None
    if lowres is not None:
        info["images"]["lowres"] = lowres
    for k, v in scalefactors.items():  # keep Space Ranger's own factors (fiducial diameter, bin size …)
        info["scalefactors"].setdefault(k, v)
    info["metadata"].update({"mpp_source": mpp_source, "source_image_kind": kind, "spaceranger_folder": str(folder.resolve())})
    if slide is not None:
        slide.close()
    log.info("Visium %s: %d spots × %d genes, tiles from %s", library_id, adata.n_obs, adata.n_vars, kind)
    return adata


def _source_slide(
    folder: Path, spatial_dir: Path, scalefactors: dict[str, float], fullres_image: str | Path | None, mpp_full: float | None
) -> tuple[Slide | None, float, str]:
    """The image tiles are cut from → ``(slide, full-res → slide px factor, kind)``."""
    fullres = Path(fullres_image) if fullres_image is not None else find_fullres_image(folder, scalefactors)
    if fullres is not None:
        slide = open_slide(fullres, mpp=mpp_full)
        expected = _expected_fullres_size(spatial_dir, scalefactors)
        if expected and not _size_matches(fullres, expected):
            warnings.warn(
                f"{fullres}: {slide.dimensions[0]}×{slide.dimensions[1]} px, but the scale factors imply "
                f"{expected[0]:.0f}×{expected[1]:.0f} px; is it the image Space Ranger was given?",
                stacklevel=3,
            )
        return slide, 1.0, "fullres"
    for png, key, kind in ((HIRES_PNG, keys.HIRES_SCALEF, "hires"), (LOWRES_PNG, keys.LOWRES_SCALEF, "lowres")):
        scalef = scalefactors.get(key)
        if (spatial_dir / png).exists():
            if not scalef:
                warnings.warn(f"{spatial_dir / png}: no {key} in {SCALEFACTORS_JSON}; image not used", stacklevel=3)
                continue
            return open_slide(spatial_dir / png, mpp=mpp_full / scalef if mpp_full else None), float(scalef), kind
    warnings.warn(f"{folder}: no usable image (full-resolution, hires or lowres); spots have no tiles", stacklevel=3)
    return None, 1.0, "none"
