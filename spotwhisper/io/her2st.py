"""Read the her2st layout (Andersson et al. 2021, ``almaan/her2st``) into AnnData.

One section (e.g. ``"C2"``) becomes one AnnData with raw counts in ``X``, spot centres in
``obsm["spatial"]`` (full-resolution pixels), the H&E image in ``uns["spatial"][section]``, and
in ``obs`` every annotation the folder has for that section: the pathologist label, the
expression cluster with its written annotation and evidence, and the cell-type proportions.

Files are joined on array ``x``/``y`` (counts rows are named ``<x>x<y>``). What does not join is
reported in ``uns["her2st_join"]`` and in a warning — spots are never dropped silently.
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .. import keys
from ..cache import files_fingerprint
from ..datadir import her2st_root
from .slide import open_slide
from .spatial import attach_image, estimate_spacing_px
from .technologies import ST

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class SectionNotFoundError(KeyError):
    """The requested section is not in the data directory."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def list_sections(data_dir: str | Path | None = None) -> list[str]:
    """Sections that have a counts file, sorted (``["C1", "C2", …]``)."""
    root = her2st_root(data_dir)
    return sorted(p.name.split(".")[0] for p in (root / "data" / "ST-cnts").glob("*.tsv.gz"))


def image_path(data_dir: str | Path | None, section: str) -> Path | None:
    """The H&E image of ``section`` (``data/ST-imgs/<patient>/<section>/*``), or ``None``."""
    folder = her2st_root(data_dir) / "data" / "ST-imgs" / section[0] / section
    if not folder.is_dir():
        return None
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


def section_files(data_dir: str | Path | None, section: str) -> list[Path]:
    """Every file :func:`read_her2st` reads for ``section`` that exists: counts, spot table, H&E image,
    pathologist labels, cluster annotation, and the shared cluster descriptions, deconvolution
    proportions and TLS signature."""
    root = her2st_root(data_dir)
    candidates = [
        root / "data" / "ST-cnts" / f"{section}.tsv.gz",
        root / "data" / "ST-spotfiles" / f"{section}_selection.tsv",
        root / "data" / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv",
        root / "res" / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz",
        root / "res" / "ST-cluster" / "motivation.csv",
        root / "res" / "ST-deconv" / "props" / "major.zip",
        root / "res" / "TLS-pred" / "tls-signature.tsv.gz",
        image_path(root, section),
    ]
    return [p for p in candidates if p is not None and p.is_file()]


def sections_fingerprint(data_dir: str | Path | None, sections: list[str]) -> str:
    """Content fingerprint (16 hex) of the files of ``sections`` (:func:`section_files`), independent
    of where the data folder is: the data part of a cache key."""
    root = her2st_root(data_dir)
    files = {p for s in sections for p in section_files(root, s)}
    return files_fingerprint(files, root)


def _spot_ids(x: pd.Series, y: pd.Series) -> pd.Index:
    return pd.Index([f"{int(round(a))}x{int(round(b))}" for a, b in zip(x, y)])


def parse_motivation(path: Path) -> pd.DataFrame:
    """Parse ``motivation.csv`` (its free-text fields hold unquoted commas).

    Returns columns ``patient``, ``cluster`` (int), ``annotation``, ``evidence``.
    """
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split(",")
        patient, cluster, rest = fields[0].strip(), int(fields[1]), fields[2:]
        starts = [i for i, f in enumerate(rest) if f.strip().lower().startswith("marker genes")]
        if starts:
            i = starts[0]
            annotation = ",".join(rest[:i])
            tail = rest[i:]
            refs = [j for j, f in enumerate(tail) if f.strip().lower().startswith(("http", "doi"))]
            evidence = ",".join(tail[: refs[0]] if refs else tail)
        else:
            annotation, evidence = rest[0], ""
        rows.append(
            {
                "patient": patient,
                "cluster": cluster,
                "annotation": " ".join(annotation.split()),
                "evidence": " ".join(evidence.strip(" ,").split()),
            }
        )
    return pd.DataFrame(rows)


@lru_cache(maxsize=4)
def _motivation(root: Path) -> pd.DataFrame | None:
    path = root / "res" / "ST-cluster" / "motivation.csv"
    return parse_motivation(path) if path.exists() else None


def _read_proportions(root: Path, section: str, tier: str = "major") -> pd.DataFrame | None:
    path = root / "res" / "ST-deconv" / "props" / f"{tier}.zip"
    if not path.exists():
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(f"{section}-proportion.tsv")]
        if not names:
            return None
        return pd.read_csv(io.BytesIO(zf.read(names[0])), sep="\t", index_col=0)


def tls_signature(data_dir: str | Path | None = None) -> pd.Series | None:
    """The TLS gene signature (gene → coefficient) from ``res/TLS-pred``, or ``None``."""
    path = her2st_root(data_dir) / "res" / "TLS-pred" / "tls-signature.tsv.gz"
    if not path.exists():
        return None
    sig = pd.read_csv(path, sep="\t", index_col=0).iloc[:, 0]
    sig.name = "tls_weight"
    return sig


def read_her2st(
    data_dir: str | Path | None,
    section: str,
    *,
    with_image: bool = True,
    hires_max_side: int = 2000,
) -> ad.AnnData:
    """Read one her2st section.

    Parameters
    ----------
    data_dir
        Data directory holding ``her2st/`` (or the her2st folder itself); ``None`` uses
        ``$SPOTWHISPER_DATA_DIR``.
    section
        Section id, e.g. ``"C2"``.
    with_image
        Attach the H&E image (a ``hires`` downsample with longer side ``hires_max_side`` px and
        the path of the full-resolution file) when the section has one.

    Returns
    -------
    AnnData with raw counts (CSR float32) in ``X``; see :mod:`spotwhisper.keys` for the rest.
    """
    root = her2st_root(data_dir)
    counts_path = root / "data" / "ST-cnts" / f"{section}.tsv.gz"
    if not counts_path.exists():
        known = ", ".join(list_sections(data_dir))
        raise SectionNotFoundError(f"unknown section {section!r}: no {counts_path} (sections here: {known})")
    spots_path = root / "data" / "ST-spotfiles" / f"{section}_selection.tsv"
    if not spots_path.exists():
        raise FileNotFoundError(f"{spots_path}: spot table of section {section} is missing")

    counts = pd.read_csv(counts_path, sep="\t", index_col=0)
    spots = pd.read_csv(spots_path, sep="\t")
    missing = {"x", "y", "pixel_x", "pixel_y"} - set(spots.columns)
    if missing:
        raise ValueError(f"{spots_path}: expected columns x, y, pixel_x, pixel_y; missing {sorted(missing)}")
    spots.index = _spot_ids(spots["x"], spots["y"])
    if spots.index.duplicated().any():
        raise ValueError(f"{spots_path}: duplicated array positions {list(spots.index[spots.index.duplicated()])}")

    matched = counts.index.intersection(spots.index, sort=False)
    only_counts = counts.index.difference(spots.index).tolist()
    only_spots = spots.index.difference(counts.index).tolist()
    if len(matched) == 0:
        raise ValueError(
            f"{counts_path} and {spots_path} share no spot (counts rows look like "
            f"{list(counts.index[:3])}, spot table gives {list(spots.index[:3])})"
        )
    if only_counts or only_spots:
        warnings.warn(
            f"her2st {section}: {len(matched)} spots matched; {len(only_counts)} spot(s) with counts but no "
            f"position {only_counts[:5]} and {len(only_spots)} position(s) without counts {only_spots[:5]} "
            "are left out (listed in uns['her2st_join'])",
            stacklevel=2,
        )
    counts = counts.loc[matched]
    spots = spots.loc[matched]

    obs = pd.DataFrame(index=pd.Index([f"{section}_{i}" for i in matched], name="spot"))
    obs[keys.SECTION] = section
    obs[keys.PATIENT] = section[0]
    obs[keys.ARRAY_X] = spots["x"].to_numpy().astype(int)
    obs[keys.ARRAY_Y] = spots["y"].to_numpy().astype(int)
    obs["spot_id"] = matched.to_numpy()
    X = sparse.csr_matrix(counts.to_numpy(dtype=np.float32))
    var = pd.DataFrame(index=pd.Index(counts.columns.astype(str), name="gene"))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.var_names_make_unique()
    adata.obsm[keys.SPATIAL] = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)

    join = {
        "n_count_spots": int(len(matched) + len(only_counts)),
        "n_position_spots": int(len(matched) + len(only_spots)),
        "n_matched": int(len(matched)),
        "counts_without_position": only_counts,
        "positions_without_counts": only_spots,
    }
    join.update(_attach_labels(adata, root, section, matched))
    join.update(_attach_clusters(adata, root, section, matched))
    join.update(_attach_proportions(adata, root, section, matched))
    adata.uns[keys.HER2ST_JOIN] = join

    spacing = estimate_spacing_px(adata.obsm[keys.SPATIAL])
    mpp = ST.spot_spacing_um / spacing
    img = image_path(root, section) if with_image else None
    attach_image(
        adata,
        library_id=section,
        slide=open_slide(img, mpp=mpp) if img is not None else None,
        mpp=mpp,
        spot_spacing_px=spacing,
        spot_diameter_px=ST.spot_diameter_um / mpp,
        technology=ST.name,
        hires_max_side=hires_max_side,
    )
    log.info("her2st %s: %d spots × %d genes, image %s", section, adata.n_obs, adata.n_vars, img)
    return adata


def _attach_labels(adata: ad.AnnData, root: Path, section: str, ids: pd.Index) -> dict:
    path = root / "data" / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    if not path.exists():
        return {"label_source": None}
    lbl = pd.read_csv(path, sep="\t")
    no_coord = lbl[lbl["x"].isna() | lbl["y"].isna()]
    lbl = lbl.dropna(subset=["x", "y"])
    lbl.index = _spot_ids(lbl["x"], lbl["y"])
    lbl = lbl[~lbl.index.duplicated()]
    hit = ids.intersection(lbl.index, sort=False)
    values = lbl["label"].reindex(ids)
    adata.obs[keys.LABEL] = pd.Categorical(values.to_numpy())
    return {
        "label_source": str(path),
        "label_rows": int(len(lbl) + len(no_coord)),
        "label_matched": int(len(hit)),
        "label_rows_without_coordinates": int(len(no_coord)),
        "spots_without_label": int(len(ids) - len(hit)),
    }


def _attach_clusters(adata: ad.AnnData, root: Path, section: str, ids: pd.Index) -> dict:
    path = root / "res" / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz"
    if not path.exists():
        return {"cluster_source": None}
    clu = pd.read_csv(path, sep="\t", index_col=0)
    clu.index = _spot_ids(clu["x"], clu["y"])
    cluster = clu["label"].reindex(ids)
    adata.obs[keys.CLUSTER] = pd.Categorical(cluster.astype("Int64").astype(str).replace("<NA>", np.nan))
    motivation = _motivation(root)
    if motivation is not None:
        m = motivation[motivation["patient"] == section[0]].set_index("cluster")
        ann = cluster.map(m["annotation"]) if len(m) else pd.Series(np.nan, index=ids)
        ev = cluster.map(m["evidence"]) if len(m) else pd.Series(np.nan, index=ids)
        adata.obs[keys.CLUSTER_ANNOTATION] = pd.Categorical(ann.to_numpy())
        adata.obs[keys.CLUSTER_EVIDENCE] = ev.fillna("").to_numpy().astype(str)
    return {"cluster_source": str(path), "cluster_matched": int(cluster.notna().sum())}


def _attach_proportions(adata: ad.AnnData, root: Path, section: str, ids: pd.Index) -> dict:
    props = _read_proportions(root, section)
    if props is None:
        return {"deconv_matched": 0}
    props = props.reindex(ids)
    for col in props.columns:
        adata.obs[f"{keys.DECONV_PREFIX}{col}"] = props[col].to_numpy(dtype=np.float32)
    return {"deconv_matched": int(props.notna().all(axis=1).sum())}


def read_her2st_collection(
    data_dir: str | Path | None,
    sections: list[str] | None = None,
    *,
    with_image: bool = False,
    join: str = "outer",
) -> ad.AnnData:
    """Read several sections into one AnnData (genes joined by ``join``; missing genes count 0)."""
    sections = sections or list_sections(data_dir)
    adatas = {s: read_her2st(data_dir, s, with_image=with_image) for s in sections}
    out = ad.concat(adatas, join=join, fill_value=0, uns_merge="first", merge="first")
    out.uns[keys.SPATIAL] = {s: a.uns[keys.SPATIAL][s] for s, a in adatas.items()}
    out.uns[keys.HER2ST_JOIN] = {s: a.uns[keys.HER2ST_JOIN] for s, a in adatas.items()}
    return out
