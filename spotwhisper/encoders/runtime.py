"""How an encoder runs: its input batch, the device it runs on, eval-mode BatchNorm folded into its convolutions.

:func:`image_batch` checks uint8 RGB tiles and makes them a ``(B, 3, H, W)`` tensor.
:func:`resolve_device` turns ``"auto"`` into a CUDA GPU when torch sees one, else the CPU.
:func:`fold_batchnorm` folds BatchNorm into the convolution before it: same outputs, less work per image.

In a CNN backbone at inference, ``bn(conv(x))`` is an affine map per output channel, so it can be
written into the convolution's weight and bias. On this CPU BatchNorm was ~25 % of the
EfficientNet-Lite0 forward time. Pairs are found structurally: within a module, a BatchNorm child
directly after a ``Conv2d`` child in declaration order (timm's EfficientNet, MobileNet and ResNet
blocks declare them in forward order); timm's ``BatchNormAct2d`` keeps its dropout and activation.
Only applied to modules in eval mode; the result is checked against the original by the caller's
tests (max abs difference ~1e-5 on real tiles).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def image_batch(images: np.ndarray, who: str = "encoder") -> torch.Tensor:
    """uint8 RGB tiles ``(B, H, W, 3)`` (or one ``(H, W, 3)``) → uint8 tensor ``(B, 3, H, W)`` sharing
    their memory when possible; ``ValueError`` naming ``who`` for anything else."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{who}: expected uint8 RGB images (B, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(0, 3, 1, 2)


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv``'s weight ``(C_out, C_in/g, kh, kw)`` and bias ``(C_out,)`` to include ``bn``."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift)


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of ``bn`` once folded: timm's ``BatchNormAct2d`` keeps ``drop`` then ``act``."""
    parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d sibling into it, in place → pairs folded.

    Raises ``ValueError`` on a model in training mode (batch statistics cannot be folded).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, prev), (name, child) in zip(children, children[1:]):
            if (isinstance(child, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d) and child.track_running_stats
                    and child.running_var is not None and prev.out_channels == child.num_features):
                _fold_into(prev, child)
                setattr(parent, name, _after_norm(child))
                folded += 1
    return folded


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when torch sees a GPU (on a Ray GPU actor: the one it was given), else ``cpu``;
    anything else as ``torch.device``, refusing ``cuda`` without a GPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no CUDA GPU (install a CUDA build of torch, or use 'cpu')")
    return dev
