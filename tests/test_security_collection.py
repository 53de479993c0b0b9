"""Damaged collections (issue 25, row 6): a slide file deleted or truncated behind the server's back.

A collection of three slides (the mini C2 slide under three names). With one slide file deleted,
``index info`` says so and a search names the slide it could not cover; with one truncated, a
whole-collection search answers from the others (CLI exit 0) and names the damaged slide, a search
of that slide alone fails with a message naming the slide, and neither the CLI nor the UI shows a
server path.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from spotwhisper.ui.chat import message_text
from tests.security_support import RawClient, outputs, running_app

SLIDES = ["C2", "C3", "C4"]


@pytest.fixture(scope="module")
def built(mini_slide, tmp_path_factory):
    """The collection "three" (C2, C3, C4: copies of the mini slide) in its own index folder."""
    from spotwhisper import keys
    from spotwhisper.collection import index_slides

    copies = []
    for name in SLIDES:
        a = mini_slide.copy()
        a.obs[keys.SECTION] = pd.Categorical([name] * a.n_obs)
        copies.append(a)
    root = tmp_path_factory.mktemp("three-src")
    index_slides(copies, "three", index_dir=root)
    return root


@pytest.fixture
def index_dir(built, tmp_path):
    """A fresh copy of the collection per test (each test damages its own)."""
    shutil.copytree(built, tmp_path / "idx")
    return tmp_path / "idx"


def _cli(capsys, *argv) -> tuple[int, str]:
    from spotwhisper.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_deleted_slide_file_is_reported(index_dir, capsys):
    (index_dir / "three" / "slides" / "C3.h5ad").unlink()
    rc, out = _cli(capsys, "index", "info", "--collection", "three", "--index-dir", str(index_dir))
    assert rc == 0 and "C3: slide file missing" in out, out
    rc, out = _cli(capsys, "index", "info", "--collection", "three", "--index-dir", str(index_dir), "--json")
    info = json.loads(out)
    assert info["damaged_slides"] == {"C3": "slide file missing"}
    rc, out = _cli(capsys, "search", "tumour", "--collection", "three", "--index-dir", str(index_dir),
                   "--out-dir", str(index_dir.parent / "out"), "--top", "0")
    assert rc == 0, out
    assert "C3" in out and "not searched" in out, out  # said, not silently skipped
    assert "C2:" in out and "C4:" in out


def test_a_truncated_slide_fails_only_itself(index_dir, capsys):
    _truncate(index_dir / "three" / "slides" / "C4.h5ad")
    rc, out = _cli(capsys, "index", "info", "--collection", "three", "--index-dir", str(index_dir))
    assert "C4: slide file unreadable" in out, out
    rc, out = _cli(capsys, "search", "tumour", "--collection", "three", "--index-dir", str(index_dir),
                   "--out-dir", str(index_dir.parent / "out"), "--top", "0")
    assert rc == 0, out
    assert "C4" in out and "not searched" in out and "C2:" in out and "C3:" in out, out
    assert str(index_dir) not in out and "slides/C4.h5ad" not in out
    rc, out = _cli(capsys, "search", "tumour", "--collection", "three", "--index-dir", str(index_dir),
                   "--slides", "C4", "--out-dir", str(index_dir.parent / "out"))
    assert rc == 1 and "C4" in out and str(index_dir) not in out and ".h5ad" not in out, out


def test_the_ui_names_the_damaged_slide_not_its_path(index_dir, tmp_path):
    from spotwhisper.search.engine import open_engine

    engine = open_engine("three", index_dir=index_dir)
    _truncate(index_dir / "three" / "slides" / "C4.h5ad")
    with running_app(engine, tmp_path / "data") as srv:
        a = RawClient(srv["port"])
        done = a.call("chat", ["find slides with tumour", [], None])
        assert done.get("success"), done
        text = message_text(outputs(done)[0][-1]["content"])
        assert "Ranked 2 slide(s)" in text and "C4" in text and "not searched" in text, text
        assert "/" not in text.replace("µm/px", ""), text  # no server path
        done = a.call("slide", ["C4", None])
        shown = json.dumps(outputs(done)) if done.get("success") else str(done)
        assert "C4" in shown and str(index_dir) not in shown and "C4.h5ad" not in shown, shown[:500]
        done = a.call("chat", ["show me tumour", [], None])
        text = message_text(outputs(done)[0][-1]["content"]) if done.get("success") else str(done)
        assert "C4" in text and str(index_dir) not in text and ".h5ad" not in text, text[:500]
