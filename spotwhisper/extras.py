"""Optional dependencies (pip extras) and the message a missing one gives.

The core install (``pip install spotwhisper``) runs the pipeline, builds and searches collections and
runs the benchmarks; the UI needs Gradio (``[ui]``), ``index build --engine ray`` needs Ray (``[ray]``),
FAISS on GPUs needs ``faiss-gpu`` (``[gpu]``); ``[dev]`` holds all of them plus the test tools.
Code that reaches an optional package calls :func:`require` first, so a missing extra is one sentence
naming the extra instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: importable module → the extra of ``pyproject.toml`` that installs it
EXTRA_OF = {"gradio": "ui", "ray": "ray"}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRA_OF`) for ``what`` (e.g. ``"spotwhisper serve"``), or raise
    :class:`MissingExtraError` naming the extra. An import error from *inside* an installed package is
    raised as it is (it is not a missing extra)."""
    extra = EXTRA_OF[module]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != module:
            raise
        raise MissingExtraError(
            f"{what} needs {module}, which is not installed: pip install 'spotwhisper[{extra}]' "
            f"(in a checkout: pip install -e '.[{extra}]')", name=module) from err
