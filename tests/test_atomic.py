"""Atomic writes: a file is replaced whole or not at all."""

from __future__ import annotations

import pytest

from spotwhisper.atomic import atomic_file


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_file_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path, fsync):
    path = tmp_path / "sub" / "out.json"
    with atomic_file(path, fsync=fsync) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_file(path, suffix=".part.npz", fsync=fsync) as tmp:
        assert tmp.name.endswith(".part.npz")
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]  # no temporary file left
