"""Typed configuration: dataclasses filled from ``configs/*.yaml``.

Every stage keeps its settings in one dataclass; the YAML files under ``configs/`` hold the
values a run uses. :func:`load_config` reads a YAML file into such a dataclass, checking that
every key is known and that values have the declared type, so a typo fails loudly instead of
being ignored.

The shipped YAML files are package data of ``spotwhisper.configs`` (the repository's ``configs/``
folder; read through :mod:`importlib.resources`, so they are found the same way from a checkout, an
editable install or a wheel). A folder given with ``--config-dir`` or ``$SPOTWHISPER_CONFIG_DIR``
is searched first: a file there (e.g. ``search.yaml``, ``bench/regions.yaml``) wins over the shipped
one of the same name. A config that is found nowhere is an error.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: Package holding the shipped YAML files (the repository's ``configs/`` folder).
CONFIG_PACKAGE = "spotwhisper.configs"
#: Environment variable naming a folder of user configs that win over the shipped ones.
CONFIG_DIR_ENV = "SPOTWHISPER_CONFIG_DIR"


def shipped_config_dir() -> Path:
    """The folder of the shipped configs inside the installed package (``spotwhisper/configs``)."""
    try:
        return Path(str(resources.files(CONFIG_PACKAGE)))
    except ModuleNotFoundError as err:  # sources on sys.path without an install: configs/ is mapped by pyproject
        raise ModuleNotFoundError(
            f"the shipped configs ({CONFIG_PACKAGE}, the repository's configs/ folder) are not installed: "
            "install SpotWhisper (pip install -e . in the checkout, or pip install spotwhisper)") from err


def user_config_dir() -> Path | None:
    """``$SPOTWHISPER_CONFIG_DIR`` (set by ``--config-dir``), or None; an error when it is not a folder."""
    value = os.environ.get(CONFIG_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"config folder {path} (from --config-dir / ${CONFIG_DIR_ENV}) does not exist")
    return path


def config_dirs() -> list[Path]:
    """Folders searched for a config by name, first match wins: the user's folder, then the shipped one."""
    user = user_config_dir()
    return [user, shipped_config_dir()] if user is not None else [shipped_config_dir()]


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
    """Find a config: an existing file path, else a name (``"tiles"``, ``"bench/harness"``,
    ``"vocabulary.yaml"``) in :func:`config_dirs` (the user's folder first, then the shipped one)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    dirs = config_dirs()
    if not p.is_absolute():
        for folder in dirs:
            for candidate in (folder / p, folder / f"{p}.yaml"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(
        f"config {path!s} not found (looked for a file of that path and in {', '.join(map(str, dirs))})")


def load_config(cls: type[T], path: str | Path | None = None, section: str | None = None, **overrides: Any) -> T:
    """Load ``cls`` from YAML ``path`` (optionally one top-level ``section`` of it).

    ``path`` is a file or a config name (see :func:`resolve_config_path`; a missing one is an error).
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
