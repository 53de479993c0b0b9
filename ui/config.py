"""UI settings (``configs/ui.yaml``): display, gallery, the server's data folder (uploads,
exports, Gradio's temporary files) with its limits, concurrency, and the optional
OpenAI-compatible language-model endpoint.

The environment wins over the file: ``SPOTWHISPER_UI_DATA_DIR`` (the data folder) and
``SPOTWHISPER_LLM_BASE_URL``, ``SPOTWHISPER_LLM_MODEL``, ``SPOTWHISPER_LLM_API_KEY``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from spotwhisper.cache import cache_dir
from spotwhisper.routes import CONCH, IMAGE, PLIP, PROTEIN, TRANSCRIPTOME
from spotwhisper.config import load_config

ENV_BASE_URL = "SPOTWHISPER_LLM_BASE_URL"
ENV_MODEL = "SPOTWHISPER_LLM_MODEL"
ENV_API_KEY = "SPOTWHISPER_LLM_API_KEY"
ENV_DATA_DIR = "SPOTWHISPER_UI_DATA_DIR"
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
    #: threshold of "compare A and B" (score units of the colour bar); compared things (tumour, stroma) are
    #: often broad, so lower than a search's; None = the search threshold
    compare_threshold: float | None = None
    route_groups: dict[str, list[str]] = field(default_factory=lambda: {
        "transcriptome": [TRANSCRIPTOME], "image–text": [IMAGE, PLIP, CONCH], "protein": [PROTEIN]})  # spotwhisper.routes
    display_max_side: int = 1400  #: overlay longer side (px) sent to the browser
    crop_margin: float | None = 2.0  #: crop the overlay to the spots plus this many spacings; None = whole slide
    gallery_tiles: int = 8  #: top spots shown as tiles
    tile_px: int = 192  #: side of a gallery tile (px), read from the full-resolution slide
    tile_context: float = 1.0  #: tile side in spot spacings
    table_rows: int = 10  #: genes and proteins listed per kind
    max_regions_listed: int = 3  #: regions named in an answer
    #: the server's data folder: sessions/<id>/ (uploads, processed slides, exports) and gradio/
    #: (GRADIO_TEMP_DIR: uploads in flight, files served to browsers); None = <cache root>/ui;
    #: $SPOTWHISPER_UI_DATA_DIR wins. Everything in it belongs to a session and is deleted with it.
    data_dir: str | None = None
    data_max_mb: int = 8192  #: size cap of the data folder; uploads and exports beyond it are refused
    session_ttl_s: float = 21600.0  #: a session idle this long is closed: its slides and files are deleted
    cleanup_interval_s: float = 300.0  #: how often idle sessions and old files are swept
    upload_mpp: float = 0.5  #: µm/px assumed for an uploaded image whose file does not say
    max_upload_mb: int = 2048  #: larger uploads are refused by the server
    #: largest plain image (JPEG/PNG/untiled TIFF, decoded whole) accepted, in pixels — checked from the file
    #: header before anything is decoded (her2st H&E: ~92 Mpx)
    max_image_pixels: int = 150_000_000
    max_tiled_pixels: int = 20_000_000_000  #: largest tiled (pyramidal) TIFF / whole-slide image, read by region
    concurrency_limit: int = 4  #: chat and view events of different sessions run at once (threads; ~2 × cores)
    upload_concurrency: int = 1  #: slide uploads processed at once (each runs the whole pipeline)
    torch_threads: int = 1  #: torch threads per request (requests already run in parallel)
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        for name in ("data_max_mb", "max_upload_mb", "max_image_pixels", "max_tiled_pixels", "concurrency_limit",
                     "upload_concurrency", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"configs/ui.yaml: {name} must be >= 1, got {getattr(self, name)}")
        if self.session_ttl_s <= 0 or self.cleanup_interval_s <= 0:
            raise ValueError("configs/ui.yaml: session_ttl_s and cleanup_interval_s must be > 0")

    def data_root(self) -> Path:
        """The server's data folder: ``$SPOTWHISPER_UI_DATA_DIR``, else ``data_dir``, else ``<cache root>/ui``."""
        value = os.environ.get(ENV_DATA_DIR) or self.data_dir
        return Path(value).expanduser() if value else cache_dir("ui")


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
