"""The tutorial (``docs/tutorial.py``, a jupytext notebook) runs end to end on the shared data."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT

TUTORIAL = ROOT / "docs" / "tutorial.py"


def test_tutorial_notebook_runs(data_dir, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    notebook = jupytext.read(TUTORIAL)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # shipped without outputs
    env = {"SPOTWHISPER_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for cell in notebook.cells for o in cell.get("outputs", []))
    assert "'image_models': 'coarse'" in text
    assert "Searched 'tertiary lymphoid structures'" in text
    assert "annotated aggregate spots; AUROC of the text query" in text
    assert "Search by example: 3 spot(s)" in text and "AUROC of the 3-spot example" in text
    assert "a_1_like.geojson" in text and "image_vec" in text
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # sw.pl.search twice, scanpy, proteins
