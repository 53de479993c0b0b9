"""Crash consistency of collection builds: SIGKILL at each phase, then the collection is the old
one or the new one — never a mix — and a rerun of the same command just works.

A local build runs in a subprocess with ``$SPOTWHISPER_KILL_AT`` naming the phase at which it
SIGKILLs itself (:func:`spotwhisper.atomic.kill_point`): after a slide is staged, after the
indexes are built (before the slide files), when the new collection is complete (before it is
moved into place), right after the atomic swap, and — where folders cannot be exchanged — between
the two renames of the fallback. The old collection holds C2 + C3; the new one (``--overwrite``)
only C4, so "old or new" is told apart by the slides search sees. (The Ray engine's kills are in
tests/test_scale_ray.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spotwhisper.cli import main

ROOT = Path(__file__).resolve().parent.parent
OLD, NEW = ["C2", "C3"], ["C4"]

JOB = textwrap.dedent("""
    import sys
    from spotwhisper.collection import build_collection
    if sys.argv[2] == "no-exchange":  # a file system without RENAME_EXCHANGE: the two-rename fallback
        sys.modules["spotwhisper.collection.publish"].exchange = lambda a, b: False
    mode = "add" if sys.argv[2] == "add" else "overwrite"
    build_collection("coll", sys.argv[3:], index_dir=sys.argv[1], mode=mode, progress=False)
""")


def _run(index_dir: Path, specs: list[str], kill_at: str | None, exchange: bool = True,
         how: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SPOTWHISPER_KILL_AT", None)
    if kill_at:
        env["SPOTWHISPER_KILL_AT"] = kill_at
    how = how or ("exchange" if exchange else "no-exchange")
    return subprocess.run([sys.executable, "-c", JOB, str(index_dir), how, *specs],
                          env=env, capture_output=True, text=True, timeout=600, check=False)


def _searched(index_dir: Path) -> list[str]:
    """The slides a search over "coll" sees (what a user gets), via the search engine."""
    from spotwhisper.search.engine import open_engine

    return sorted(open_engine("coll", index_dir=index_dir).slide_names())


@pytest.fixture(scope="module")
def built(strip_specs, tmp_path_factory):
    """The old collection: C2 + C3, built in this process (the local engine)."""
    from spotwhisper.collection import build_collection

    index_dir = tmp_path_factory.mktemp("indexes")
    build_collection("coll", strip_specs[:2], index_dir=index_dir, progress=False)
    return index_dir


def test_first_build_has_normal_permissions_and_no_leftovers(built):
    umask = os.umask(0)
    os.umask(umask)
    folder = built / "coll"
    for path in (folder, folder / "slides", next((folder / "shards").iterdir())):
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, f"{path} is {oct(path.stat().st_mode & 0o777)}"
    assert sorted(p.name for p in built.iterdir()) == ["coll"]  # staging cleared, no temporary folders
    assert _searched(built) == OLD


@pytest.mark.parametrize("phase, after", [
    ("stage", OLD),  # C4 processed and staged, nothing committed
    ("commit:indexed", OLD),  # the new indexes exist in .tmp-coll-*, its slide files do not
    ("commit:complete", OLD),  # the new collection is complete in .tmp-coll-*, not moved yet
    ("commit:swapped", NEW),  # swapped in; the old folder not deleted yet
])
def test_kill_at_each_phase_leaves_old_or_new(built, strip_specs, phase, after, capsys):
    proc = _run(built, strip_specs[2:], phase)
    assert proc.returncode == -9, f"the build was not killed at {phase!r}:\n{proc.stderr[-3000:]}"
    assert _searched(built) == after
    assert main(["index", "list", "--index-dir", str(built)]) == 0
    listed = capsys.readouterr().out
    assert "coll" in listed and "BROKEN" not in listed
    n_slides = int(listed.splitlines()[1].split()[1])
    assert n_slides == len(after)
    if after == NEW:  # put the old one back for the next phase
        from spotwhisper.collection import build_collection

        build_collection("coll", strip_specs[:2], index_dir=built, mode="overwrite", progress=False)
        assert _searched(built) == OLD


def test_kill_between_the_fallback_renames_keeps_the_old_one_reachable(built, strip_specs):
    """Without an atomic exchange the old folder is renamed aside first; killed right then, readers
    still find the old collection (set aside), and the next build puts it back before committing."""
    proc = _run(built, strip_specs[2:], "commit:old-moved", exchange=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (built / "coll").exists() and list(built.glob(".old-coll-*/coll/manifest.json"))
    assert _searched(built) == OLD  # readers are pointed at the set-aside old collection
    proc = _run(built, strip_specs[2:], "commit:complete", exchange=False)  # the rerun restores it first
    assert proc.returncode == -9 and (built / "coll" / "manifest.json").is_file()
    assert _searched(built) == OLD and not list(built.glob(".old-coll-*"))


def test_rerun_after_kills_completes_and_drops_the_old_slides(built, strip_specs):
    proc = _run(built, strip_specs[2:], None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _searched(built) == NEW  # --overwrite: the old slides are gone, search sees only C4
    assert sorted(p.stem for p in (built / "coll" / "slides").iterdir()) == NEW
    assert sorted(p.name for p in built.iterdir()) == ["coll"]  # leftovers and staging cleaned
    from spotwhisper.index import CollectionIndex

    assert CollectionIndex.open("coll", index_dir=built).slides() == NEW


def test_add_killed_before_its_manifest_update_is_invisible_then_resumes(built, strip_specs):
    """--add writes the new slide files first: killed right after, search does not list the slide
    (the manifest does not), and the rerun adds it once."""
    assert _searched(built) == NEW
    proc = _run(built, strip_specs[:1], "add:slides", how="add")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (built / "coll" / "slides" / "C2.h5ad").is_file() and _searched(built) == NEW
    proc = _run(built, strip_specs[:1], None, how="add")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _searched(built) == ["C2", "C4"]
    from spotwhisper.index import CollectionIndex

    assert CollectionIndex.open("coll", index_dir=built).slides() == ["C4", "C2"]
