"""Hostile and broken input: names that would become paths, inputs checked before any work,
damaged index files named in the error, and ``index list`` with one broken collection."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.io import write_h5ad
from spotwhisper.names import (
    BadNameError,
    check_name,
    inside,
    safe_name,
    slug,
    unique_name,
    unique_path,
)


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", "", ".hidden", "x\0y", "a..b", "C2 ", "é", "x" * 200])
def test_check_name_refuses_what_could_be_a_path(bad):
    with pytest.raises(BadNameError, match="cannot be a path"):
        check_name(bad, "slide")


def test_names_are_cleaned_and_kept_unique(tmp_path):
    assert check_name("C2_v1.2-b") == "C2_v1.2-b"
    assert safe_name("../../etc/passwd") == "etc_passwd" and safe_name("..") == "unnamed"
    assert slug("Tumour / stroma?!") == "tumour_stroma"
    assert unique_name("C2", ["C2", "C2-2"]) == "C2-3"
    (tmp_path / "C2_q.png").write_text("")
    assert unique_path(tmp_path, "C2_q", [".png", ".csv"]).name == "C2_q-2"
    assert inside(tmp_path, "a", "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(BadNameError):
        inside(tmp_path, "..", "x")


@pytest.fixture
def collection_copy(mini_collection, tmp_path):
    """A private copy of the mini collection (tests here damage it)."""
    index_dir, name = mini_collection
    shutil.copytree(Path(index_dir) / name, tmp_path / "idx" / name)
    return tmp_path / "idx", name


def _files_named(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if text in p.name]


def test_section_that_is_a_path_is_refused(mini_slide, tmp_path, capsys):
    """obs["section"] = "../../escaped" in an .h5ad: refused by --from-h5ad and by the pipeline
    path (before processing), and nothing is written outside the index folder."""
    evil = mini_slide.copy()
    evil.obs[keys.SECTION] = "../../escaped"
    src = write_h5ad(evil, tmp_path / "in" / "evil.h5ad")
    idx = tmp_path / "a" / "b" / "idx"
    assert main(["index", "build", "--collection", "c", "--from-h5ad", str(src), "--index-dir", str(idx)]) == 1
    assert "bad slide name '../../escaped'" in capsys.readouterr().err
    start = time.perf_counter()
    assert main(["index", "build", "--collection", "c", str(src), "--index-dir", str(idx), "--no-progress"]) == 1
    assert "bad slide (obs['section'] of evil.h5ad) name '../../escaped'" in capsys.readouterr().err
    assert time.perf_counter() - start < 20  # refused before any model was loaded or slide processed
    assert not _files_named(tmp_path, "escaped")
    assert main(["index", "build", "--collection", "../x", "--from-h5ad", str(src), "--index-dir", str(idx)]) == 1
    assert "bad collection name '../x'" in capsys.readouterr().err
    assert not (tmp_path / "a" / "b" / "x").exists()


def test_unknown_slide_is_rejected_before_any_slide_is_processed(data_dir, tmp_path, capsys):
    start = time.perf_counter()
    rc = main(["index", "build", "--collection", "c", "C2", "Z9", "--index-dir", str(tmp_path), "--data-dir",
               str(data_dir), "--no-progress"])
    assert rc == 1 and time.perf_counter() - start < 20
    err = capsys.readouterr().err
    assert "Z9: no such her2st section" in err and "C2" in err  # the known sections are listed
    assert not list(tmp_path.rglob("*.h5ad"))  # C2 was not processed (nothing staged)
    assert main(["index", "build", "--collection", "c", str(tmp_path / "nope.png"), "--index-dir", str(tmp_path)]) == 1
    assert "nope.png: no such file" in capsys.readouterr().err


def test_search_slides_cannot_leave_the_collection_and_outputs_stay_unique(collection_copy, tmp_path, capsys):
    idx, name = collection_copy
    (tmp_path / "x.h5ad").write_text("outside")
    out = tmp_path / "out"
    base = ["search", "--collection", name, "--index-dir", str(idx), "--out-dir", str(out)]
    assert main([*base, "tumour", "--slides", "../../../x"]) == 1
    assert "bad slide name '../../../x'" in capsys.readouterr().err and not out.exists()
    assert main([*base, "tumour?"]) == 0 and main([*base, "tumour!"]) == 0  # both slug to "tumour"
    capsys.readouterr()
    written = sorted(p.name for p in out.iterdir())
    assert written == ["C2_tumour-2.csv", "C2_tumour-2.geojson", "C2_tumour-2.png",
                       "C2_tumour.csv", "C2_tumour.geojson", "C2_tumour.png"]
    assert main([*base, "../../../../tmp/evil"]) == 0  # a query is never a path
    assert all(p.parent == out for p in out.rglob("*")) and not list(tmp_path.glob("evil*"))


def test_corrupt_index_files_are_named(collection_copy, capsys):
    from spotwhisper.index import CollectionIndex, IndexFormatError

    idx, name = collection_copy
    faiss_file = next((idx / name / "shards").glob("*/transcriptome.faiss"))
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(IndexFormatError, match=rf"{faiss_file}: corrupt or truncated faiss index"):
        CollectionIndex.open(name, index_dir=idx)
    assert main(["index", "info", "--collection", name, "--index-dir", str(idx)]) == 1
    err = capsys.readouterr().err
    assert str(faiss_file) in err and "Traceback" not in err
    faiss_file.write_bytes(b"\0" * 64)  # garbage
    with pytest.raises(IndexFormatError, match="transcriptome.faiss: corrupt or truncated"):
        CollectionIndex.open(name, index_dir=idx)
    faiss_file.write_bytes(data)
    meta = faiss_file.parent / "metadata.parquet"
    meta.write_bytes(meta.read_bytes()[:100])
    with pytest.raises(IndexFormatError, match="metadata.parquet"):
        CollectionIndex.open(name, index_dir=idx)


def test_index_list_shows_valid_collections_and_marks_the_broken_one(collection_copy, capsys):
    idx, name = collection_copy
    shutil.copytree(idx / name, idx / "broken")
    (idx / "broken" / "manifest.json").write_text('{"format": "spotwhisper-index/1", "shards": [')  # cut short
    shutil.copytree(idx / name, idx / "zzz")
    assert main(["index", "list", "--index-dir", str(idx)]) == 0
    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert set(lines) == {"broken", name, "zzz"}
    assert "BROKEN" in lines["broken"] and "manifest.json" in lines["broken"]
    assert "BROKEN" not in lines[name] and "BROKEN" not in lines["zzz"]
    assert "1 collection(s) cannot be read" in captured.err
    assert main(["index", "info", "--collection", "broken", "--index-dir", str(idx)]) == 1
    assert "manifest.json: unreadable manifest" in capsys.readouterr().err


def test_uploaded_file_names_are_cleaned(tmp_path):
    from spotwhisper.ui.files import keep_upload, session_folder

    src = tmp_path / "a b;rm -rf ..png"
    src.write_bytes(b"x")
    folder = session_folder(tmp_path / "data", "../../other-session")
    assert folder.parent == tmp_path / "data" and folder.name == "other-session"
    kept = keep_upload(src, folder)
    assert kept.name == "a_b_rm_-rf.png" and folder in kept.parents
