"""Typed configuration: YAML files load into their dataclasses; typos and wrong types fail loudly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spotwhisper.config import ConfigError, load_config, to_dict
from spotwhisper.tiles import TileConfig
from tests.layout import ROOT


def test_shipped_tiles_yaml_matches_dataclass_defaults():
    assert to_dict(load_config(TileConfig, "tiles")) == to_dict(TileConfig())


def test_unknown_key_and_wrong_type_are_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spot:\n  tile_umm: 100\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['tile_umm'\\]"):
        load_config(TileConfig, bad)
    bad.write_text("batch_size: lots\n")
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        load_config(TileConfig, bad)
    bad.write_text("stain:\n  normalize: 3\n")
    with pytest.raises(ConfigError, match="normalize: expected bool"):
        load_config(TileConfig, bad)


def test_values_and_overrides(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("spot:\n  tile_um: 150\ngrid:\n  overlap: 0.5\n")
    cfg = load_config(TileConfig, good, batch_size=8)
    assert cfg.spot.tile_um == 150.0 and isinstance(cfg.spot.tile_um, float)
    assert cfg.grid.overlap == 0.5 and cfg.batch_size == 8
    assert dataclasses.is_dataclass(cfg.spot)
    with pytest.raises(FileNotFoundError, match="config nope not found"):
        load_config(TileConfig, "nope")


def test_shipped_configs_are_package_data_and_a_user_folder_wins(tmp_path, monkeypatch):
    from spotwhisper.config import CONFIG_DIR_ENV, config_dirs, resolve_config_path, shipped_config_dir
    from spotwhisper.prompts import load_vocabulary

    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    shipped = shipped_config_dir()
    import spotwhisper.configs

    assert shipped == Path(spotwhisper.configs.__file__).parent  # the package spotwhisper.configs (configs/)
    assert resolve_config_path("bench/harness") == shipped / "bench" / "harness.yaml"
    assert resolve_config_path("vocabulary.yaml") == shipped / "vocabulary.yaml"
    assert len(load_vocabulary().terms) > 10
    # a folder from --config-dir / $SPOTWHISPER_CONFIG_DIR is searched first, file by file
    (tmp_path / "bench").mkdir()
    (tmp_path / "tiles.yaml").write_text("batch_size: 7\n")
    (tmp_path / "bench" / "harness.yaml").write_text("seed: 3\n")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    assert config_dirs() == [tmp_path, shipped]
    assert load_config(TileConfig, "tiles").batch_size == 7
    assert resolve_config_path("bench/harness") == tmp_path / "bench" / "harness.yaml"
    assert resolve_config_path("search") == shipped / "search.yaml"  # not overridden: the shipped one
    # a bare name is never a folder of the working directory (the repository has a ui/ folder)
    monkeypatch.chdir(ROOT)
    assert resolve_config_path("ui").name == "ui.yaml"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_config_path("tiles")


def test_cli_config_dir_option_reaches_the_commands(tmp_path, monkeypatch, capsys):
    from spotwhisper.cli import main
    from spotwhisper.config import CONFIG_DIR_ENV

    monkeypatch.setenv(CONFIG_DIR_ENV, "")  # main() sets it; monkeypatch removes it again afterwards
    monkeypatch.delenv("SPOTWHISPER_INDEX_DIR", raising=False)
    (tmp_path / "index.yaml").write_text(f"index_dir: {tmp_path / 'mine'}\n")
    (tmp_path / "mine").mkdir()
    assert main(["--config-dir", str(tmp_path), "index", "list"]) == 0
    assert str(tmp_path / "mine") in capsys.readouterr().out
