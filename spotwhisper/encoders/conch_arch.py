"""CONCH's CoCa architecture, built from timm / open_clip blocks with the checkpoint's key names.

Source: ``mahmoodlab/CONCH`` ``conch/open_clip_custom`` — ``model_configs/conch_ViT-B-16.json``
(sizes), ``coca_model.py`` (towers, ``logit_scale``), ``vision_tower.py`` (attentional poolers,
``proj_contrast``), ``transformer.py`` (text tower with an appended CLS token, multimodal decoder).
Only the retrieval half (``visual`` + ``text`` + ``logit_scale``) is instantiated; the caption parts
are built on the ``meta`` device to check a checkpoint's keys and shapes without using memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ConchArch:
    """CONCH architecture; defaults are ``conch_ViT-B-16.json`` plus the CoCa dataclass defaults."""

    embed_dim: int = 512
    embed_dim_caption: int = 768
    image_size: int = 448
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    mlp_ratio: float = 4.0
    attn_pooler_heads: int = 8
    n_queries_caption: int = 256
    context_length: int = 128  #: incl. the appended CLS token
    vocab_size: int = 32007
    text_width: int = 768
    text_heads: int = 12
    text_layers: int = 12
    decoder_layers: int = 12
    pad_id: int = 0


class ConchVisual(nn.Module):
    """CONCH image tower for retrieval: ViT trunk → attentional pooler (1 query) → LN → projection."""

    def __init__(self, arch: ConchArch):
        super().__init__()
        from open_clip.transformer import AttentionalPooler
        from timm.models.vision_transformer import VisionTransformer

        self.trunk = VisionTransformer(
            embed_dim=arch.vision_width,
            depth=arch.vision_layers,
            num_heads=arch.vision_heads,
            mlp_ratio=arch.mlp_ratio,
            img_size=arch.image_size,
            patch_size=arch.patch_size,
            num_classes=0,
            dynamic_img_size=True,
        )
        self.attn_pool_contrast = AttentionalPooler(arch.embed_dim, arch.vision_width, arch.attn_pooler_heads, 1)
        self.ln_contrast = nn.LayerNorm(arch.embed_dim)
        self.proj_contrast = nn.Parameter(arch.vision_width**-0.5 * torch.randn(arch.embed_dim, arch.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0]) @ self.proj_contrast


class ConchModule(nn.Module):
    """The retrieval half of CONCH's CoCa: ``visual``, ``text`` and ``logit_scale``."""

    def __init__(self, arch: ConchArch):
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.visual = ConchVisual(arch)
        # open_clip adds one position for the appended CLS token; the legacy (correct_cls_mask=False)
        # mask is CONCH's; it differs from CONCH's only on padding rows the CLS output never reads
        self.text = TextTransformer(
            context_length=arch.context_length - 1,
            vocab_size=arch.vocab_size,
            width=arch.text_width,
            heads=arch.text_heads,
            layers=arch.text_layers,
            output_dim=arch.embed_dim,
            embed_cls=True,
            pad_id=arch.pad_id,
            correct_cls_mask=False,
            act_layer=nn.GELU,
            norm_layer=nn.LayerNorm,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


def conch_caption_parts(arch: ConchArch) -> dict[str, nn.Module]:
    """The caption-only parts of CONCH (attentional caption pooler, multimodal decoder), keyed
    as in the checkpoint; built by callers on the ``meta`` device for key/shape checks."""
    from open_clip.transformer import AttentionalPooler, MultimodalTransformer

    return {
        "visual.attn_pool_caption": AttentionalPooler(
            arch.embed_dim_caption, arch.vision_width, arch.attn_pooler_heads, arch.n_queries_caption
        ),
        "visual.ln_caption": nn.LayerNorm(arch.embed_dim_caption),
        "text_decoder": MultimodalTransformer(
            width=arch.text_width,
            layers=arch.decoder_layers,
            heads=arch.text_heads,
            context_length=arch.context_length,
            output_dim=arch.vocab_size,
            act_layer=nn.GELU,
            norm_layer=nn.LayerNorm,
        ),
    }


def conch_checkpoint_shapes(arch: ConchArch) -> dict[str, tuple[int, ...]]:
    """Every key of a full CONCH checkpoint and its shape (built on the meta device, no memory)."""
    with torch.device("meta"):
        parts = {"": ConchModule(arch), **conch_caption_parts(arch)}
    shapes = {}
    for prefix, mod in parts.items():
        for k, v in mod.state_dict().items():
            shapes[f"{prefix}.{k}" if prefix else k] = tuple(v.shape)
    return shapes
