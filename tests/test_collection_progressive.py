"""A collection grown one committed slide at a time (what ``spotwhisper demo`` does for its first answer)."""

from __future__ import annotations

import pytest

from spotwhisper import keys


@pytest.fixture(scope="module")
def two_small_slides(mini_raw, tmp_path_factory):
    """Two .h5ad slides of 12 real C2 spots each (own section names; the C2 H&E as their image)."""
    folder = tmp_path_factory.mktemp("slides")
    paths = []
    for name, rows in (("C2a", slice(0, 12)), ("C2b", slice(40, 52))):
        part = mini_raw[rows].copy()
        part.obs[keys.SECTION] = name
        part.obs[keys.SECTION] = part.obs[keys.SECTION].astype("category")
        path = folder / f"{name}.h5ad"
        part.write_h5ad(path)
        paths.append(str(path))
    return paths


def test_slides_are_committed_one_by_one(two_small_slides, tmp_path):
    from spotwhisper.cli.cmd_demo import attach
    from spotwhisper.collection import open_collection
    from spotwhisper.collection.progressive import ProgressiveBuild
    from spotwhisper.search.engine import SearchEngine

    ready: list[str] = []
    index_dir = tmp_path / "indexes"
    build = ProgressiveBuild("grow", two_small_slides, index_dir=index_dir, on_ready=ready.append)
    assert build.status().total == 2 and build.status().ready == [] and "0 of 2" in build.status().line()
    assert build.run_first(progress=False) == "C2a"
    assert open_collection("grow", index_dir).slides() == ["C2a"]  # searchable before the rest is built
    assert build.status().ready == ["C2a"] and build.status().seconds_per_spot > 0
    engine = SearchEngine()  # what the demo serves before its first slide: no slides yet
    assert engine.slide_names() == []
    attach(engine, "grow", index_dir)
    assert engine.slide_names() == ["C2a"] and engine.search("immune infiltrate").slides[0].slide == "C2a"
    build.start().join(timeout=600)
    engine.index.refresh()  # what the demo does when a slide is ready: the engine lists what its manifest lists
    st = build.status()
    assert st.finished and st.ready == ["C2a", "C2b"] and ready == ["C2a", "C2b"] and not st.failed
    assert "the collection is complete" in st.line()
    assert sorted(engine.slide_names()) == ["C2a", "C2b"]  # the served engine sees the added slide
    opened = open_collection("grow", index_dir)
    assert sorted(opened.index.slides()) == ["C2a", "C2b"]  # both slides' vectors are indexed
    assert not list((index_dir / ".staging").rglob("*.h5ad"))  # staged files go once committed
    again = ProgressiveBuild("grow", two_small_slides, index_dir=index_dir)
    again.mark_ready(opened.slides())
    assert again.pending() == [] and again.status().finished  # a rerun has nothing left to do


def test_a_failing_slide_is_reported_and_the_others_go_on(two_small_slides, tmp_path):
    from spotwhisper.collection.progressive import ProgressiveBuild

    import numpy as np
    from PIL import Image

    broken = tmp_path / "glass.png"  # an image without tissue (and without µm/px): the pipeline refuses it
    Image.fromarray(np.full((300, 300, 3), 243, np.uint8)).save(broken)
    build = ProgressiveBuild("mixed", [str(broken), two_small_slides[0]], index_dir=tmp_path / "idx")
    assert build.run_first(progress=False) is None
    build.run_rest()
    st = build.status()
    assert st.ready == ["C2a"] and list(st.failed) == [str(broken.resolve())] and st.finished
    assert "1 failed" in st.line()
