"""The repository's package layout, read from ``pyproject.toml`` (one source for the tests)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_dirs() -> dict[str, Path]:
    """Sub-packages that ``pyproject.toml`` maps from other folders of the repository
    (``[tool.setuptools] package-dir``: ``spotwhisper.ui`` = ``ui/``, ``spotwhisper.configs`` = ``configs/``)."""
    table = _pyproject()["tool"]["setuptools"].get("package-dir", {})
    return {name: ROOT / folder for name, folder in table.items() if name}


def listed_packages() -> list[str]:
    """The packages ``pyproject.toml`` installs (``[tool.setuptools] packages``)."""
    return list(_pyproject()["tool"]["setuptools"]["packages"])
