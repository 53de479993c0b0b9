"""ONNX export of an image encoder's backbone, cached under the user cache.

The exported graph is the torch module as it runs (eval mode, BatchNorm already folded by
:func:`~spotwhisper.encoders.runtime.fold_batchnorm`): normalised images ``(B, 3, S, S)`` float32 →
features ``(B, D)`` float32, with a dynamic batch axis; the side ``S`` is fixed (shape-dependent code
such as TF "SAME" padding is traced at it), so encoders that read tiles at any size stay on torch. Preprocessing (resize, mean/std) stays in :meth:`ImageEncoder.preprocess`,
so every runtime sees the same input tensor as torch does.

Files live in ``<cache root>/exported/<encoder>/<fingerprint>.onnx`` — never in the checkout or the
installed package. The fingerprint (:func:`export_fingerprint`) hashes the module's parameters and
buffers, its input size, the opset, the torch version and the source of this module and of
:mod:`.runtime`, so new weights, a new export or a new torch never reuse a stale file. Files are
written atomically, so two processes exporting the same model at once both end with a valid file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_file
from ..cache import cache_dir, code_fingerprint
from .registry import ImageEncoder

log = logging.getLogger(__name__)

#: name of the input and output of every exported graph
INPUT_NAME, OUTPUT_NAME = "images", "features"


def exported_dir() -> Path:
    """``<cache root>/exported`` (see :mod:`spotwhisper.cache`; not created)."""
    return cache_dir("exported")


def export_fingerprint(encoder: ImageEncoder, opset: int) -> str:
    """24-hex fingerprint of what an export of ``encoder`` depends on (see the module docstring).

    Hashes every parameter and buffer (name, shape, dtype, bytes): ~15 ms for EfficientNet-Lite0's
    4.6 M weights, seconds for a ViT-g — small next to loading such a model.
    """
    h = hashlib.sha256()
    head = {"name": encoder.name, "image_size": encoder.image_size, "embed_dim": encoder.embed_dim, "opset": opset,
            "torch": torch.__version__, "code": code_fingerprint(__name__, "spotwhisper.encoders.runtime")}
    h.update(json.dumps(head, sort_keys=True).encode())
    state = encoder.model.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # any memory format
    return h.hexdigest()[:24]


def export_onnx(encoder: ImageEncoder, opset: int = 17, folder: Path | None = None) -> Path:
    """The ONNX file of ``encoder``'s backbone: exported once per fingerprint, then reused.

    ``folder`` defaults to :func:`exported_dir`. Raises ``RuntimeError`` (with torch's message) when
    the module cannot be exported, or is not a CPU module of a fixed input size.
    """
    if not encoder.image_size or encoder.device.type != "cpu":
        raise RuntimeError(f"{encoder.name}: only CPU encoders of a fixed input size are exported "
                           f"(input size {encoder.image_size or 'any'}, device {encoder.device})")
    root = Path(folder) if folder is not None else exported_dir()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder.name)
    path = root / safe / f"{export_fingerprint(encoder, opset)}.onnx"
    if path.is_file():
        return path
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError("the ONNX export needs the PyPI package onnx (`pip install onnx`), which is not installed")
    example = torch.zeros((2, 3, encoder.image_size, encoder.image_size), dtype=torch.float32)
    log.info("%s: exporting to ONNX (opset %d) → %s", encoder.name, opset, path)
    try:
        with atomic_file(path, suffix=".part.onnx") as tmp, torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes (TF "SAME" padding)
            torch.onnx.export(encoder.model.eval(), (example,), str(tmp), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False)
    except Exception as err:  # noqa: BLE001 - any exporter failure means: this model runs on torch
        raise RuntimeError(f"{encoder.name}: ONNX export failed ({type(err).__name__}: {err})") from err
    return path
