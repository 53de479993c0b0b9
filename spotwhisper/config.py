"""Typed configuration: dataclasses filled from ``configs/*.yaml``.

Every stage keeps its settings in one dataclass; the YAML files under ``configs/`` hold the
values a run uses. :func:`load_config` reads a YAML file into such a dataclass, checking that
every key is known and that values have the declared type, so a typo fails loudly instead of
being ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: Folder that holds the YAML files shipped with the project (``<repo>/configs``).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration file or value does not match its dataclass."""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_type = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, val_type, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is Path and isinstance(value, (str, Path)):
        return Path(value)
    if isinstance(annotation, type):
        if annotation is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        if not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass → plain dict (paths as strings), suitable for YAML or JSON."""

    def _plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: _plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [_plain(x) for x in v]
        return v

    return _plain(dataclasses.asdict(obj))


def resolve_config_path(path: str | Path) -> Path:
    """Find a config by path, or by bare name (``"tiles"``) inside :data:`CONFIG_DIR`."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"config {path!s} not found (looked in the working directory and {CONFIG_DIR})")


def load_config(cls: type[T], path: str | Path | None = None, section: str | None = None, **overrides: Any) -> T:
    """Load ``cls`` from YAML ``path`` (optionally one top-level ``section`` of it).

    With ``path=None`` the dataclass defaults are used. Keyword ``overrides`` win over the file.
    """
    data: dict[str, Any] = {}
    if path is not None:
        resolved = resolve_config_path(path)
        with open(resolved) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{resolved}: expected a mapping at the top level")
        if section is not None:
            if section not in loaded:
                raise ConfigError(f"{resolved}: no section {section!r} (found {sorted(loaded)})")
            loaded = loaded[section] or {}
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data)
