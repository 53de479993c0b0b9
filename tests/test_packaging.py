"""What the install needs and carries: POSIX-only modules are optional, and the package's data are found
through the package (``spotwhisper.configs``, ``spotwhisper.ui``), wherever the folders live."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tests.layout import package_dirs


def test_staging_works_without_the_posix_resource_module(monkeypatch):
    from spotwhisper.collection import staging

    assert staging.peak_rss_mb() > 0
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows: import resource raises ImportError
    assert math.isnan(staging.peak_rss_mb())


def test_configs_and_ui_static_come_from_the_mapped_folders():
    from spotwhisper.config import shipped_config_dir
    from spotwhisper.ui.viewer import static_dir

    dirs = package_dirs()
    assert shipped_config_dir().resolve() == dirs["spotwhisper.configs"].resolve()
    assert (shipped_config_dir() / "search.yaml").is_file()
    assert static_dir().resolve() == (dirs["spotwhisper.ui"] / "static").resolve()
    assert (static_dir() / "viewer.js").is_file() and (static_dir() / "openseadragon").is_dir()
    assert not Path(sys.modules["spotwhisper"].__file__).parent.joinpath("ui").exists()
