"""The package as the tests see it: its layout, read from ``pyproject.toml``, and its optional extras."""

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


#: A module that makes ``gradio`` and ``ray`` unimportable (as in a core install without the extras).
BLOCKER_SOURCE = '''import sys


class BlockExtras:
    """gradio and ray are not installed (the extras [ui] and [ray] were not asked for)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("gradio", "gradio_client", "ray"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, BlockExtras())
'''
