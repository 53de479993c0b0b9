"""UI settings (``configs/ui.yaml``): display, gallery, uploads, exports and the optional
OpenAI-compatible language-model endpoint.

The endpoint can also come from the environment, which wins over the file:
``SPOTWHISPER_LLM_BASE_URL``, ``SPOTWHISPER_LLM_MODEL`` and ``SPOTWHISPER_LLM_API_KEY``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from spotwhisper.config import load_config

ENV_BASE_URL = "SPOTWHISPER_LLM_BASE_URL"
ENV_MODEL = "SPOTWHISPER_LLM_MODEL"
ENV_API_KEY = "SPOTWHISPER_LLM_API_KEY"
ENV_UPLOAD_DIR = "SPOTWHISPER_UPLOAD_DIR"
#: config name of the UI settings (``configs/ui.yaml``, or ``ui.yaml`` in ``--config-dir``)
UI_CONFIG = "ui"


@dataclass
class LLMConfig:
    """An OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions`` with tools)."""

    base_url: str | None = None  #: e.g. http://127.0.0.1:8000/v1; None = no language model
    model: str | None = None  #: model name the endpoint serves
    api_key: str | None = None  #: better set through $SPOTWHISPER_LLM_API_KEY
    timeout_s: float = 60.0  #: seconds per request
    max_tool_rounds: int = 4  #: model turns that may call tools before it must answer
    temperature: float = 0.2
    history_turns: int = 6  #: earlier chat messages sent along

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)


@dataclass
class UIConfig:
    """Everything the Gradio app reads."""

    title: str = "SpotWhisper"
    examples: list[str] = field(default_factory=lambda: [
        "show me tertiary lymphoid structures", "where is PD-L1 high?", "compare tumour and stroma",
        "which genes explain the highlighted region?", "find slides with immune infiltrate"])  #: under the chat box
    threshold: float | None = None  #: initial threshold (relevance log-odds); None = configs/search.yaml
    threshold_range: tuple[float, float] = (-6.0, 2.0)  #: slider bounds (relevance log-odds)
    threshold_step: float = 0.1
    route_groups: dict[str, list[str]] = field(default_factory=lambda: {
        "transcriptome": ["transcriptome"], "image–text": ["image", "plip", "conch"], "protein": ["protein"]})
    display_max_side: int = 1400  #: overlay longer side (px) sent to the browser
    crop_margin: float | None = 2.0  #: crop the overlay to the spots plus this many spacings; None = whole slide
    gallery_tiles: int = 8  #: top spots shown as tiles
    tile_px: int = 192  #: side of a gallery tile (px), read from the full-resolution slide
    tile_context: float = 1.0  #: tile side in spot spacings
    table_rows: int = 10  #: genes and proteins listed per kind
    max_regions_listed: int = 3  #: regions named in an answer
    #: one sub-folder per session ($SPOTWHISPER_UPLOAD_DIR wins); user data, so not under the re-computable cache
    upload_dir: str = "~/.local/share/spotwhisper/uploads"
    upload_mpp: float = 0.5  #: µm/px assumed for an uploaded image whose file does not say
    max_upload_mb: int = 2048  #: larger uploads are refused by the server
    llm: LLMConfig = field(default_factory=LLMConfig)

    def upload_root(self) -> Path:
        """The folder uploads and exports are kept in (created on first use)."""
        return Path(os.environ.get(ENV_UPLOAD_DIR) or self.upload_dir).expanduser()


def load_ui_config(path: str | Path | None = UI_CONFIG, **overrides) -> UIConfig:
    """Read :class:`UIConfig` from ``configs/ui.yaml`` (or ``path``; ``None`` = defaults), then
    let the ``SPOTWHISPER_LLM_*`` environment variables override the endpoint."""
    cfg = load_config(UIConfig, path, **overrides)
    env = {"base_url": os.environ.get(ENV_BASE_URL), "model": os.environ.get(ENV_MODEL),
           "api_key": os.environ.get(ENV_API_KEY)}
    env = {k: v for k, v in env.items() if v}
    if env:
        cfg.llm = replace(cfg.llm, **env)
    return cfg
