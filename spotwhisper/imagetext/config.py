"""Settings of the image–text route (``configs/imagetext.yaml``) and the model they name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..encoders.clip_models import ImageTextModel, load_conch, load_plip


@dataclass
class PlipSettings:
    """Where PLIP comes from."""

    source: str = "vinid/plip"  #: hub id (local HF cache) or a ``save_pretrained`` folder
    local_files_only: bool = True  #: never download at run time


@dataclass
class ConchSettings:
    """Where CONCH comes from (gated weights the user downloads)."""

    checkpoint: Path | None = None  #: ``pytorch_model.bin`` from MahmoodLab/CONCH
    tokenizer: Path | None = None  #: tokenizer JSON; None = beside the checkpoint or the ``conch`` package


@dataclass
class ImageTextConfig:
    """Everything the image–text route needs."""

    model: Literal["plip", "conch"] = "plip"
    device: str = "cpu"
    plip: PlipSettings = field(default_factory=PlipSettings)
    conch: ConchSettings = field(default_factory=ConchSettings)
    batch_size: int = 32  #: tiles per forward pass
    templates_route: str = "image"  #: prompt-template route in the vocabulary
    text_cache_size: int = 4096  #: prompt embeddings kept in the LRU cache


def load_model(cfg: ImageTextConfig, name: str | None = None) -> ImageTextModel:
    """Build the model ``name`` (default ``cfg.model``) from the configured weights."""
    name = name or cfg.model
    if name == "plip":
        return load_plip(cfg.plip.source, local_files_only=cfg.plip.local_files_only, device=cfg.device)
    if name == "conch":
        if cfg.conch.checkpoint is None:
            raise ValueError(
                "CONCH needs its checkpoint: set conch.checkpoint in configs/imagetext.yaml to the "
                "pytorch_model.bin downloaded from https://huggingface.co/MahmoodLab/CONCH (gated)"
            )
        return load_conch(cfg.conch.checkpoint, tokenizer=cfg.conch.tokenizer, device=cfg.device)
    raise ValueError(f"unknown image-text model {name!r}; choose plip or conch")
