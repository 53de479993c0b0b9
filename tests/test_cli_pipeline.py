"""The pipeline from the command line on a real slide window: predict expression and proteins,
build a collection from slides, search it."""

from __future__ import annotations

import numpy as np
import pytest

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.io import read_h5ad, write_h5ad


@pytest.fixture(scope="module")
def window_h5ad(mini_raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "C2win.h5ad"
    write_h5ad(mini_raw, path)
    return path


def test_predict_expression_and_proteins_from_the_image(window_h5ad, tmp_path, capsys):
    out = tmp_path / "expr.h5ad"
    assert main(["predict", "expression", str(window_h5ad), "--out", str(out), "--no-progress"]) == 0
    pred = read_h5ad(out)
    assert pred.n_vars == 2067 and "uncertainty_epistemic" in pred.layers
    assert (pred.layers["uncertainty_aleatoric"] > 0).all()
    prot = tmp_path / "prot.h5ad"
    assert main(["predict", "proteins", str(window_h5ad), "--infer", "--out", str(prot)]) == 0
    p = read_h5ad(prot)
    assert p.obsm[keys.PROTEINS].shape == (pred.n_obs, 50)
    assert (tmp_path / "prot.ome.tif").exists()
    markers = list(p.uns[keys.PROTEIN_MARKERS])
    assert np.isnan(p.obsm[keys.PROTEINS][:, markers.index("DAPI")]).all()  # no fair proxy


def test_index_build_from_slides_then_search(window_h5ad, tmp_path, capsys):
    idx = tmp_path / "indexes"
    assert main(["index", "build", "--collection", "win", str(window_h5ad), "--index-dir", str(idx), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"collection 'win' in {idx}: 1 slides" in out and "routes transcriptome, image" in out
    assert (idx / "win" / "slides" / "C2.h5ad").exists()
    assert main(["search", "immune infiltrate", "--collection", "win", "--index-dir", str(idx),
                 "--out-dir", str(tmp_path / "res")]) == 0
    assert "Searched 'immune infiltrate' on 1 slide(s)" in capsys.readouterr().out
    assert main(["index", "remove-slide", "--collection", "win", "C2", "--index-dir", str(idx)]) == 0
    assert not (idx / "win" / "slides" / "C2.h5ad").exists()
    assert main(["index", "build", "--collection", "win2", "--index-dir", str(idx)]) == 1
    assert "name the slides to index" in capsys.readouterr().err


def test_a_bare_image_is_tiled_on_a_grid_and_searchable(tmp_path, he_image, capsys):
    from PIL import Image

    img = tmp_path / "slide.png"
    Image.fromarray(he_image).save(img)
    idx = tmp_path / "indexes"
    assert main(["index", "build", "--collection", "img", str(img), "--mpp", "2.0", "--index-dir", str(idx),
                 "--no-progress"]) == 0
    slide = read_h5ad(idx / "img" / "slides" / "slide.h5ad")
    assert slide.n_obs > 5 and keys.TEXT_EMB in slide.obsm
    assert "text_emb_measured" not in slide.obsm  # no counts, no measured route
    assert main(["search", "invasive cancer", "--collection", "img", "--index-dir", str(idx),
                 "--out-dir", str(tmp_path / "res")]) == 0
    assert "on 1 slide(s)" in capsys.readouterr().out
    assert main(["index", "build", "--collection", "img2", str(img), "--index-dir", str(idx)]) == 1
    assert "microns per pixel unknown" in capsys.readouterr().err
