"""``spotwhisper search`` writes files for exactly the slides it reports, named by slide and query."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from spotwhisper import keys
from spotwhisper.cli import main


def _two_slide_collection(mini_slide, tmp_path):
    from spotwhisper.collection import index_slides

    other = mini_slide.copy()
    other.obs[keys.SECTION] = "C2-copy"
    other.obs[keys.SECTION] = other.obs[keys.SECTION].astype("category")
    index_dir = tmp_path / "indexes"
    index_slides([mini_slide, other], "two", index_dir=index_dir)
    return index_dir


def test_search_writes_every_reported_slide(mini_slide, tmp_path, capsys):
    index_dir = _two_slide_collection(mini_slide, tmp_path)
    out = tmp_path / "top1"
    args = ["search", "tertiary lymphoid structures", "--collection", "two", "--index-dir", str(index_dir),
            "--threshold", "1.0"]
    assert main([*args, "--out-dir", str(out), "--top", "1"]) == 0
    text = capsys.readouterr().out
    assert "on 1 slide(s)" in text and "1 more slide(s) scored lower" in text
    stems = {p.name.split("_tertiary")[0] for p in out.iterdir()}
    assert len(stems) == 1 and len(list(out.iterdir())) == 3  # png, csv, geojson of the one slide reported
    reported = stems.pop()
    assert reported in text

    out_all = tmp_path / "all"
    assert main([*args, "--out-dir", str(out_all), "--top", "0", "--ome-tiff", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    slides = [s["slide"] for s in report["slides"]]
    assert sorted(slides) == ["C2", "C2-copy"] and report["not_reported"] == []
    for slide in slides:
        stem = f"{slide}_tertiary_lymphoid_structures"
        for suffix in (".png", ".csv", ".geojson", "_virtual_proteins.ome.tif"):
            assert (out_all / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
    assert len(report["files"]) == 8
    # the PNG carries a colour bar (a white inset at the bottom-left with the inferno gradient)
    img = np.asarray(Image.open(out_all / "C2_tertiary_lymphoid_structures.png").convert("RGB")).astype(int)
    corner = img[int(img.shape[0] * 0.6):, : int(img.shape[1] * 0.6)]
    yellowish = ((corner[..., 0] > 230) & (corner[..., 1] > 200) & (corner[..., 2] < 120)).sum()
    assert (corner > 245).all(-1).mean() > 0.05 and yellowish > 10
