"""SpotWhisper's Gradio UI: chat search over slides with heat-map overlays, explanations and export.

* :mod:`spotwhisper.ui.app` — the Blocks layout; :func:`spotwhisper.ui.app.launch` serves it (``spotwhisper demo`` / ``serve``)
* :mod:`spotwhisper.ui.handlers` — session state (:class:`~spotwhisper.ui.handlers.View`) and the actions: search, contrast,
  explain, compare slides, re-fuse and re-threshold
* :mod:`spotwhisper.ui.chat` — intent routing without a language model; OpenAI-compatible endpoint with tools
* :mod:`spotwhisper.ui.display` — overlay, top tiles, gene/protein and region tables
* :mod:`spotwhisper.ui.files` — per-session uploads and exports (CSV, .h5ad, GeoJSON for QuPath)
* :mod:`spotwhisper.ui.sessions`, :mod:`spotwhisper.ui.access`, :mod:`spotwhisper.ui.received` — sessions and files
  kept apart per browser (client cookie): who may fetch a file, act on a session, use an upload
* :mod:`spotwhisper.ui.guard` — every callback: input text cleaned, errors told without server paths
* :mod:`spotwhisper.ui.upload_budget` — the CPU an upload would cost, from its header, before decoding
* :mod:`spotwhisper.ui.config` — :class:`~spotwhisper.ui.config.UIConfig` from ``configs/ui.yaml``

Importing this package does not import Gradio; :mod:`spotwhisper.ui.app` does.
"""

from __future__ import annotations


def __getattr__(name: str):
    """``spotwhisper.ui.launch`` (serve the UI) is :func:`spotwhisper.ui.app.launch`, imported on first use."""
    if name == "launch":
        from .app import launch

        return launch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
