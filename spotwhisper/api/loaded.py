"""Models loaded once per process and shared by every API call (``sw.tl.infer``, ``sw.tl.search``,
``sw.Collection``), so a notebook never holds two copies of the text model."""

from __future__ import annotations

import threading

from ..language import TextExpressionModel
from ..pipeline import Models

_LOCK = threading.Lock()
_MODELS: Models | None = None
_TEXT: TextExpressionModel | None = None


def pipeline_models(models: Models | None = None) -> Models:
    """``models``, else the shipped pipeline models (``configs/pipeline.yaml``), loaded on first use."""
    global _MODELS
    if models is not None:
        return models
    with _LOCK:
        if _MODELS is None:
            _MODELS = Models.load()
        return _MODELS


def text_model(models: Models | None = None) -> TextExpressionModel:
    """The transcriptome–text model search uses: that of ``models`` or of the loaded pipeline models,
    else the shipped one alone (loaded once)."""
    global _TEXT
    if models is not None:
        return models.text
    with _LOCK:
        if _MODELS is not None:
            return _MODELS.text
        if _TEXT is None:
            _TEXT = TextExpressionModel.from_pretrained()
        return _TEXT


def loaded_models() -> Models | None:
    """The pipeline models if this process loaded them already (else None: nothing is loaded)."""
    return _MODELS
