"""SpotWhisper's Gradio UI: chat search over slides with heat-map overlays, explanations and export.

* :mod:`ui.app` — the Blocks layout; :func:`ui.app.launch` serves it (``spotwhisper demo`` / ``serve``)
* :mod:`ui.handlers` — session state (:class:`~ui.handlers.View`) and the actions: search, contrast,
  explain, compare slides, re-fuse and re-threshold
* :mod:`ui.chat` — intent routing without a language model; OpenAI-compatible endpoint with tools
* :mod:`ui.display` — overlay, top tiles, gene/protein and region tables
* :mod:`ui.files` — per-session uploads and exports (CSV, .h5ad, GeoJSON for QuPath)
* :mod:`ui.config` — :class:`~ui.config.UIConfig` from ``configs/ui.yaml``

Importing this package does not import Gradio; :mod:`ui.app` does.
"""

from __future__ import annotations


def launch(*args, **kwargs):
    """Serve the UI; see :func:`ui.app.launch`."""
    from .app import launch as _launch

    return _launch(*args, **kwargs)
