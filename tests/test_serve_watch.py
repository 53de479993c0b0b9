"""``serve`` sees collections and slides added while it runs: a collection built, grown and rebuilt
by another process under a running server (real HTTP) shows up at the next request, never half-written."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from spotwhisper import keys
from tests.conftest import ROOT

gradio_client = pytest.importorskip("gradio_client")
from tests.test_ui_sessions import _free_port  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def slide_files(mini_slide, tmp_path_factory):
    """The mini C2 slide as three processed .h5ad files named C2, C2b and C2c."""
    from spotwhisper.io import write_h5ad

    folder = tmp_path_factory.mktemp("slides")
    out = {}
    for name in ("C2", "C2b", "C2c"):
        a = mini_slide.copy()
        a.obs[keys.SECTION] = name
        out[name] = write_h5ad(a, folder / f"{name}.h5ad")
    return out


def _cli(*args: str) -> None:
    """``spotwhisper …`` in another process, as a user building next to a running server would."""
    code = "import sys; from spotwhisper.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_live_collection_follows_commits(slide_files, tmp_path):
    from spotwhisper.collection import LiveCollection, index_slides
    from spotwhisper.io import read_h5ad
    from spotwhisper.search.engine import SearchEngine

    live = LiveCollection("grow", tmp_path, interval_s=0)
    engine = SearchEngine.following(live)
    assert live.current() is None and engine.slide_names() == []  # not built yet: nothing, no error
    index_slides([read_h5ad(slide_files["C2"])], "grow", tmp_path)
    assert engine.slide_names() == ["C2"]
    before = engine.index
    index_slides([read_h5ad(slide_files["C2b"])], "grow", tmp_path, mode="add")
    assert engine.slide_names() == ["C2", "C2b"] and engine.index is not before
    held = engine.search("invasive cancer")  # a request holds one state from start to end
    assert {h.slide for h in held.slides} == {"C2", "C2b"}
    # a manifest that cannot be read is not served: the previous state stays, and the error is kept
    manifest = tmp_path / "grow" / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{broken")
    assert engine.slide_names() == ["C2", "C2b"] and "manifest" in (live.error or "")
    manifest.write_text(good)
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert engine.slide_names() == ["C2", "C2b"] and live.error is None
    # a rebuild replaces the collection whole: the engine moves to the new one
    index_slides([read_h5ad(slide_files["C2c"])], "grow", tmp_path, mode="overwrite")
    assert engine.slide_names() == ["C2c"]
    with pytest.raises(KeyError):
        engine.slide("C2")


def test_a_collection_added_under_a_running_server(slide_files, tmp_path):
    """``serve --wait`` on a collection that does not exist yet; another process builds it, then a slide is added."""
    from spotwhisper.collection import LiveCollection
    from spotwhisper.search.engine import SearchEngine
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import load_ui_config

    index_dir = tmp_path / "indexes"
    live = LiveCollection("later", index_dir, interval_s=0.2)
    engine = SearchEngine.following(live)
    port = _free_port()
    app = launch(engine, port=port, cfg=load_ui_config(data_dir=str(tmp_path / "ui")), block=False, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)

        def chat_slides() -> str:
            from spotwhisper.ui.chat import message_text

            history = client.predict("find slides with tumour", [], api_name="/chat")[0]
            return message_text(history[-1]["content"])

        assert "build a collection first" in chat_slides()
        _cli("index", "build", "--collection", "later", "--index-dir", str(index_dir), "--from-h5ad", str(slide_files["C2"]))
        time.sleep(0.3)
        first = chat_slides()
        assert "C2" in first and "C2b" not in first
        from spotwhisper.collection import index_slides  # (in this process: the server only reads the disk)
        from spotwhisper.io import read_h5ad

        index_slides([read_h5ad(slide_files["C2b"])], "later", index_dir, mode="add")
        time.sleep(0.3)
        second = chat_slides()
        assert "2 slide(s)" in second and "C2b" in second
    finally:
        app.close()
