"""Typed configuration: YAML files load into their dataclasses; typos and wrong types fail loudly."""

from __future__ import annotations

import dataclasses

import pytest

from spotwhisper.config import ConfigError, load_config, to_dict
from spotwhisper.tiles import TileConfig


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
