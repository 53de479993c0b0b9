"""``.h5ad`` in and out; writes are atomic (temporary file, then rename)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from ..atomic import atomic_file


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Read an ``.h5ad`` file, with an error that names the file when it is missing or broken."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such .h5ad file")
    try:
        return ad.read_h5ad(p)
    except Exception as err:
        raise ValueError(f"{p}: not a readable .h5ad file ({err})") from err


def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` atomically; a failed write leaves any earlier file intact."""
    p = Path(path)
    with atomic_file(p, suffix=".part.h5ad") as tmp:
        adata.write_h5ad(tmp)
    return p
