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
from spotwhisper.routes import CONCH, IMAGE, IMAGE_VEC, PLIP, PROTEIN, TRANSCRIPTOME
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
    timeout_s: float = 60.0  #: seconds the endpoint may stay silent (connect, or between two reads)
    total_timeout_s: float = 120.0  #: seconds one chat answer may take, every request and tool call included
    max_reply_kb: int = 1024  #: largest endpoint answer read (KB); a larger one is cut off and refused
    max_tool_rounds: int = 4  #: model turns that may call tools before it must answer
    max_tool_calls: int = 8  #: tool calls (searches, explanations) run for one chat message, all rounds together
    max_answer_chars: int = 8000  #: longest answer of the model shown in the chat (longer ones are cut)
    temperature: float = 0.2
    history_turns: int = 6  #: earlier chat messages sent along

    def __post_init__(self) -> None:
        for name in ("timeout_s", "total_timeout_s", "max_reply_kb", "max_tool_calls", "max_answer_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"configs/ui.yaml: llm.{name} must be > 0, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)


@dataclass
class UploadBudget:
    """The work one upload may cost, estimated from the image header before a pixel is decoded
    (:mod:`spotwhisper.ui.upload_budget`): pixels decoded for the overview and the tiles, and the
    tiles run through the image models (the spots, or a grid over the whole image)."""

    max_cpu_s: float = 900.0  #: an upload estimated to need more CPU seconds is refused
    cpu_s_per_tile: float = 0.3  #: image models per tile (spot tile + 3 × 3 sub-tiles, EfficientNet-Lite0, 1 thread)
    decode_mpx_per_s: float = 30.0  #: Mpx decoded per CPU second (deflate/JPEG tiles, PIL, tiffslide)

    def __post_init__(self) -> None:
        for name in ("max_cpu_s", "cpu_s_per_tile", "decode_mpx_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"configs/ui.yaml: upload_budget.{name} must be > 0, got {getattr(self, name)}")


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
        "transcriptome": [TRANSCRIPTOME], "image–text": [IMAGE, PLIP, CONCH, IMAGE_VEC], "protein": [PROTEIN]})  # spotwhisper.routes
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
    upload_budget: UploadBudget = field(default_factory=UploadBudget)
    #: uploads one browser (client cookie) may hold (MB): raw uploads not used yet plus its sessions' folders
    client_upload_mb: int = 4096
    upload_unused_ttl_s: float = 900.0  #: a raw upload no upload event has used within this is deleted
    max_request_kb: int = 1024  #: largest event request (JSON) read to check whose session it names
    concurrency_limit: int = 4  #: chat and view events of different sessions run at once (threads; ~2 × cores)
    upload_concurrency: int = 1  #: slide uploads processed at once (each runs the whole pipeline)
    torch_threads: int = 1  #: torch threads per request (requests already run in parallel)
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        for name in ("data_max_mb", "max_upload_mb", "max_image_pixels", "max_tiled_pixels", "concurrency_limit",
                     "upload_concurrency", "torch_threads", "client_upload_mb", "max_request_kb"):
            if getattr(self, name) < 1:
                raise ValueError(f"configs/ui.yaml: {name} must be >= 1, got {getattr(self, name)}")
        if self.session_ttl_s <= 0 or self.cleanup_interval_s <= 0 or self.upload_unused_ttl_s <= 0:
            raise ValueError("configs/ui.yaml: session_ttl_s, cleanup_interval_s and upload_unused_ttl_s must be > 0")

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
