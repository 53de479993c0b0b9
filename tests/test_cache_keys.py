"""Cache keys hash every input that changes the output: file content (not paths) and code."""

from __future__ import annotations

import gzip
import shutil
import sys

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image

from spotwhisper import keys
from spotwhisper.cache import cache_key, code_fingerprint, files_fingerprint
from spotwhisper.collection.staging import spec_identity
from spotwhisper.io import sections_fingerprint


def _her2st(root, counts: str = "gene\tA\n1x1\t3\n"):
    """A minimal her2st layout: counts and spot table of section C9 (content only matters here)."""
    (root / "her2st" / "data" / "ST-cnts").mkdir(parents=True)
    (root / "her2st" / "data" / "ST-spotfiles").mkdir(parents=True)
    with gzip.open(root / "her2st" / "data" / "ST-cnts" / "C9.tsv.gz", "wt") as fh:
        fh.write(counts)
    (root / "her2st" / "data" / "ST-spotfiles" / "C9_selection.tsv").write_text("x\ty\tpixel_x\tpixel_y\n1\t1\t10\t10\n")
    return root


def test_files_fingerprint_follows_content_not_location(tmp_path):
    a = _her2st(tmp_path / "a")
    shutil.copytree(a, tmp_path / "moved", copy_function=shutil.copy)  # new path, new mtimes, same bytes
    files = lambda root: sorted((root / "her2st").rglob("*.*"))  # noqa: E731
    assert files_fingerprint(files(a), a) == files_fingerprint(files(tmp_path / "moved"), tmp_path / "moved")
    assert sections_fingerprint(a, ["C9"]) == sections_fingerprint(tmp_path / "moved", ["C9"])
    b = _her2st(tmp_path / "b", counts="gene\tA\n1x1\t4\n")  # one count differs
    assert sections_fingerprint(a, ["C9"]) != sections_fingerprint(b, ["C9"])


def test_staging_identity_is_the_content_of_section_files_and_named_images(tmp_path):
    a, b = _her2st(tmp_path / "a"), _her2st(tmp_path / "b", counts="gene\tA\n1x1\t5\n")
    shutil.copytree(a, tmp_path / "copy")
    assert spec_identity("C9", a) == spec_identity("C9", tmp_path / "copy")
    assert spec_identity("C9", a) != spec_identity("C9", b)
    # an .h5ad names its H&E image by path: the image's content is part of the identity
    image = tmp_path / "he.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(image)
    adata = ad.AnnData(X=np.ones((2, 2), np.float32), obs=pd.DataFrame(index=["s1", "s2"]))
    adata.uns[keys.SPATIAL] = {"lib": {"metadata": {keys.SOURCE_IMAGE: str(image)}}}
    spec = tmp_path / "spots.h5ad"
    adata.write_h5ad(spec)
    before = spec_identity(str(spec), None)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(image)  # same path, other pixels
    assert spec_identity(str(spec), None) != before


def test_code_fingerprint_changes_with_the_source(tmp_path, monkeypatch):
    pkg = tmp_path / "fpdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "captions.py").write_text("def caption(x):\n    return f'{x} tissue'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = code_fingerprint("fpdemo")
    assert first == code_fingerprint("fpdemo") and first != code_fingerprint("fpdemo.captions")
    (pkg / "captions.py").write_text("def caption(x):\n    return f'{x} region'\n")
    assert code_fingerprint("fpdemo") != first
    sys.modules.pop("fpdemo", None)
    assert cache_key("a", {"b": 1}) == cache_key("a", {"b": 1}) != cache_key("a", {"b": 2})
