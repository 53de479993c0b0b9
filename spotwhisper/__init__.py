"""SpotWhisper: free-text search over H&E slides.

``import spotwhisper as sw`` gives the Python API in the scanpy manner (:mod:`spotwhisper.api`):
``sw.read``, ``sw.tl.infer`` / ``sw.tl.search`` / ``sw.tl.compare``, ``sw.pl.search`` / ``sw.pl.proteins``
``sw.Collection`` and ``sw.write_spatialdata``. They are imported on first use, so ``import spotwhisper`` stays cheap (no
torch, scanpy or faiss until a function needs them).
"""

import importlib

__version__ = "0.1.0"

#: public name → (module, attribute; None = the module itself), imported on first access
_LAZY = {
    "read": ("spotwhisper.api.reading", "read"),
    "tl": ("spotwhisper.api.tl", None),
    "pl": ("spotwhisper.api.pl", None),
    "Collection": ("spotwhisper.api.collection", "Collection"),
    "write_spatialdata": ("spotwhisper.api.spatialdata_io", "write_spatialdata"),
}

__all__ = ["Collection", "__version__", "pl", "read", "tl", "write_spatialdata"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'spotwhisper' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
