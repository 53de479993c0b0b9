"""Every input from the command line: an image with a spot table (``index build --image --spots``),
search by example (``search --like`` / ``--like-geojson``), and the errors that name what was wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from spotwhisper.cli import main
from tests.conftest import synthetic_he


@pytest.fixture(scope="module")
def spot_table(data_dir, tmp_path_factory):
    """C2's image with a CSV of 20 spot centres (two array rows, named by array x × y): what a user has."""
    from spotwhisper.io import image_path

    folder = tmp_path_factory.mktemp("spot-table")
    table = pd.read_csv(data_dir / "her2st" / "data" / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    rows = table[table["y"].between(12, 16)]
    csv = folder / "spots.csv"
    pd.DataFrame({"barcode": [f"{x}x{y}" for x, y in zip(rows["x"], rows["y"])], "x": rows["pixel_x"],
                  "y": rows["pixel_y"]}).to_csv(csv, index=False)
    return image_path(data_dir, "C2"), csv, len(rows)


def _example(csv, k: int = 3) -> list[str]:
    """The first spot of the table and its ``k − 1`` nearest spots (a small region)."""
    t = pd.read_csv(csv)
    d = (t["x"] - t["x"].iloc[0]) ** 2 + (t["y"] - t["y"].iloc[0]) ** 2
    return list(t["barcode"].iloc[d.argsort()[:k]])


@pytest.fixture(scope="module")
def built(spot_table, tmp_path_factory):
    """``index build --image IMG --spots CSV`` into a fresh index folder (µm/px from the spot pitch)."""
    image, csv, n = spot_table
    index_dir = tmp_path_factory.mktemp("indexes")
    code = main(["index", "build", "--collection", "table", "--index-dir", str(index_dir), "--image", str(image),
                 "--spots", str(csv), "--name", "C2t", "--no-progress"])
    assert code == 0
    return index_dir, n


def test_index_build_from_an_image_and_spot_table(built, capsys):
    from spotwhisper.index import CollectionIndex

    index_dir, n = built
    coll = CollectionIndex.open("table", index_dir=index_dir)
    assert coll.slides() == ["C2t"] and len(coll) == n
    assert {"transcriptome", "image", "image_vec"} <= set(coll.routes())
    assert main(["index", "info", "--collection", "table", "--index-dir", str(index_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_vectors"] == n


def test_search_like_spots_and_geojson(built, spot_table, tmp_path, capsys):
    index_dir, _ = built
    out = tmp_path / "out"
    base = ["search", "--collection", "table", "--index-dir", str(index_dir), "--out-dir", str(out)]
    example = _example(spot_table[1])
    assert main([*base, "--like", "C2t:" + ",".join(example), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["query"] == "like C2t " + ",".join(example) and report["slides"][0]["slide"] == "C2t"
    assert report["nearest"]["route"] == "image_vec"
    nearest = [s["spot"] for s in report["nearest"]["spots"][:3]]
    assert len(set(nearest) & set(example)) >= 2  # FAISS finds the example's own spots first
    geojson = next(p for p in map(Path, report["files"]) if p.suffix == ".geojson")
    assert report["found"]  # the example's spots are as alike as they are to each other: a region
    assert main([*base, "--like-geojson", str(geojson)]) == 0  # the regions it wrote are an example again
    assert "like C2t annotation" in capsys.readouterr().out
    spot = pd.read_csv(spot_table[1]).iloc[0]
    box = f"C2t:{spot.x - 150:.0f},{spot.y - 150:.0f},{spot.x + 150:.0f},{spot.y + 150:.0f}"
    assert main([*base, "--like", box]) == 0
    assert "nearest spots across the collection" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--like", "C2t"], "expected SLIDE:SPOT"),
    (["--like", "C2t:nope1,nope2"], "has no spot(s) ['nope1', 'nope2']"),
    (["--like", "nope:1x1"], "no slide 'nope'"),
    (["--like", "../x:1x1"], "bad slide name"),
    (["--like", "C2t:0,0,1,1"], "no spot of C2t has its centre in that box"),
    (["QUERY", "--like", "C2t:1x1"], "exactly one"),
    ([], "exactly one"),
    (["--like-geojson", "missing.geojson"], "no such file"),
])
def test_search_like_errors(built, args, message, capsys):
    index_dir, _ = built
    argv = ["search", "--collection", "table", "--index-dir", str(index_dir)]
    if args and args[0] == "QUERY":
        argv.insert(1, "tumour")
        args = args[1:]
    assert main([*argv, *args]) == 1
    assert message in capsys.readouterr().err


def test_like_geojson_needs_its_slide(built, tmp_path, capsys):
    index_dir, _ = built
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]},
                                 "properties": {"objectType": "annotation"}}]))
    argv = ["search", "--collection", "table", "--index-dir", str(index_dir), "--like-geojson", str(path)]
    assert main(argv) == 1
    assert "does not say which slide" in capsys.readouterr().err
    assert main([*argv, "--like-slide", "C2t"]) == 1
    assert "no spot of C2t lies inside" in capsys.readouterr().err


def test_spot_table_errors_name_the_file(spot_table, tmp_path, capsys):
    image, csv, _ = spot_table
    base = ["index", "build", "--collection", "bad", "--index-dir", str(tmp_path / "ix"), "--no-progress"]
    cases = []
    (tmp_path / "noxy.csv").write_text("a,b\n1,2\n3,4\n")
    cases.append((["--image", str(image), "--spots", str(tmp_path / "noxy.csv")], "noxy.csv: a spot table needs columns x and y"))
    (tmp_path / "text.csv").write_text("x,y\n1,2\nabc,4\n")
    cases.append((["--image", str(image), "--spots", str(tmp_path / "text.csv")], "text.csv: 1 row(s) with a missing or non-numeric x/y"))
    cases.append((["--image", str(tmp_path / "none.jpg"), "--spots", str(csv)], "--image"))
    cases.append((["--image", str(image), "--spots", str(tmp_path / "none.csv")], "no such spot table"))
    cases.append((["--spots", str(csv)], "--spots goes with --image"))
    cases.append((["--image", str(image), "--spots", str(csv), "C2"], "leave out the SLIDE arguments"))
    cases.append((["--image", str(image), "--spots", str(csv), "--name", "../up"], "bad slide (--name"))
    plain = tmp_path / "plain.png"
    Image.fromarray(synthetic_he((400, 500))).save(plain)
    (tmp_path / "few.csv").write_text("x,y\n100,100\n200,200\n")
    cases.append((["--image", str(plain), "--spots", str(tmp_path / "few.csv")], "µm per pixel unknown"))
    for args, message in cases:
        assert main([*base, *args]) == 1, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
    assert not (tmp_path / "ix" / "bad").exists()  # nothing half-written
