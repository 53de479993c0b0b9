"""Image towers of image–text models (PLIP, CONCH) as registry backbones.

The models themselves (both towers, tokenizers, zero-shot scoring) live in :mod:`.clip_models`,
imported only when one of these backbones is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, EncoderSpec, LoadedBackbone, register_model
from .weights import EncoderWeightsError, resolve_weight_file, strip_hub_prefix, weights_help


class ImageTower(nn.Module):
    """The image tower of an image–text model: ``encode_image`` (L2-normalised) as ``forward``."""

    def __init__(self, clip_model: Any):
        super().__init__()
        self.clip = clip_model  # an ImageTextModel (not itself an nn.Module) …
        inner = getattr(clip_model, "module", None)
        if isinstance(inner, nn.Module):
            self.inner = inner  # … whose torch module is registered, so .to()/.parameters() reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


def _clip_models() -> Any:
    try:
        from . import clip_models
    except ImportError as err:
        raise EncoderWeightsError(
            f"image–text encoders need spotwhisper.encoders.clip_models, which is not available ({err})"
        ) from err
    return clip_models


def _from_clip(m: Any, wid: str) -> LoadedBackbone:
    return LoadedBackbone(
        ImageTower(m), int(m.embed_dim), wid, int(m.image_size), tuple(m.mean), tuple(m.std)  # type: ignore[arg-type]
    )


def load_plip_tower(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """PLIP's image tower through ``clip_models.load_plip`` (hub id or local folder)."""
    if not pretrained:
        raise EncoderWeightsError("plip: only pretrained weights are supported")
    source = weights or strip_hub_prefix(spec.weights)
    m = _clip_models().load_plip(source, local_files_only=local_files_only, **model_kwargs)
    local = Path(source).expanduser()
    wid = f"dir:{local.resolve()}" if local.exists() else f"hf-hub:{source}"
    return _from_clip(m, wid)


def load_conch_tower(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """CONCH's image tower through ``clip_models.load_conch(checkpoint)``; the checkpoint may come from the hub."""
    if not pretrained:
        raise EncoderWeightsError("conch: only pretrained weights are supported")
    repo = strip_hub_prefix(spec.weights)
    help_text = weights_help(spec.name, repo, spec.gated)
    path, wid = resolve_weight_file(weights or spec.weights, local_files_only=local_files_only, help_text=help_text)
    return _from_clip(_clip_models().load_conch(path, **model_kwargs), wid)


# PLIP (Huang et al. 2023): OpenAI CLIP ViT-B/32 fine-tuned on OpenPath; 224 px, OpenAI CLIP mean/std.
@register_model
def plip_image_tower() -> EncoderSpec:
    return EncoderSpec(
        name="plip",
        family="clip",
        arch="clip-vit-b-32",
        embed_dim=512,
        input_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        interpolation="bicubic",
        weights="vinid/plip",
        licence="research use only (see huggingface.co/vinid/plip)",
        loader=load_plip_tower,
        reference="huggingface.co/vinid/plip; spotwhisper.encoders.clip_models",
    )


# mahmoodlab/CONCH conch/open_clip_custom/model_configs/conch_ViT-B-16.json: embed_dim 512,
# vision image_size 448, patch 16; constants.py OPENAI_DATASET_MEAN / _STD.
@register_model
def conch_image_tower() -> EncoderSpec:
    return EncoderSpec(
        name="conch",
        family="clip",
        arch="conch_ViT-B-16",
        embed_dim=512,
        input_size=448,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        interpolation="bicubic",
        weights="hf-hub:MahmoodLab/CONCH",
        licence="CC-BY-NC-ND-4.0 (non-commercial academic research; gated)",
        loader=load_conch_tower,
        gated=True,
        reference="github.com/mahmoodlab/CONCH; spotwhisper.encoders.clip_models",
    )
