"""Where an image encoder's forward pass runs: torch, ONNX Runtime or OpenVINO, chosen and logged.

:func:`attach_runtime` exports the encoder's backbone to ONNX (:mod:`.onnx_export`, cached per weights
and code), builds a :class:`OnnxRuntimeBackend` or :class:`OpenVinoBackend` on it and hands it to the
:class:`~spotwhisper.encoders.registry.ImageEncoder`, whose ``encode`` then runs the backbone there.
Preprocessing stays in torch, so every runtime sees the same input tensor; torch stays the reference
and the fallback. ``runtime.use: auto`` (``configs/encoders.yaml``) tries ``runtime.order`` — the
runtimes measured fastest first (``benchmarks/runtime_speed.py``) — among those the encoder's spec
lists as validated (``EncoderSpec.runtimes``). A runtime that is not installed, fails to export or
fails to load is skipped with a logged message naming the pip package; on a CUDA GPU the encoder runs
on torch with ``gpu_precision`` autocast.

Precision: ``fp32`` everywhere (features within ~1e-6 of torch); ``bf16`` on OpenVINO (AVX-512 BF16);
``int8`` — static post-training quantisation calibrated on her2st tiles (:mod:`.quantize`). Measured
per-tile cosines to torch fp32 are in ``benchmarks/results/runtime_speed.md``; only fp32 holds the
0.995 bar on EfficientNet-Lite0, so it is the default.

OpenVINO runs as ``streams`` single-threaded streams (one batch split between them) rather than one
stream of several threads: on a shared 2-core machine threads of one stream wait for each other at
every layer, streams do not (measured 2.4× faster under load).
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from .onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, exported_dir

log = logging.getLogger(__name__)

#: PyPI package of each runtime that is not torch, and how to install it
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
INSTALL_HINT = {"onnx": "pip install onnxruntime, or the [onnx] extra", "openvino": "pip install openvino"}
RUNTIMES = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")


@dataclass
class CalibrationConfig:
    """Tiles that calibrate int8 activation ranges (her2st sections; features are judged on others)."""

    sections: list[str] = field(default_factory=lambda: ["C3", "C4", "C5", "C6"])
    spots_per_section: int = 16  #: spots read per section; each gives the tile and its g × g sub-tiles
    method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"  #: onnxruntime.quantization CalibrationMethod
    per_channel: bool = True  #: per-output-channel weight scales


@dataclass
class RuntimeConfig:
    """``runtime:`` section of ``configs/encoders.yaml``."""

    use: Literal["auto", "torch", "onnx", "openvino"] = "auto"  #: runtime of the forward pass
    order: list[str] = field(default_factory=lambda: ["openvino", "onnx", "torch"])  #: what ``auto`` tries, in turn
    precision: Literal["fp32", "bf16", "int8"] = "fp32"  #: CPU precision (bf16: OpenVINO only)
    threads: int | None = None  #: CPU threads of the runtime (None = torch's thread count)
    streams: int | None = None  #: OpenVINO streams (None = one single-threaded stream per thread)
    opset: int = 17  #: ONNX opset of the export
    onnx_spinning: bool = False  #: ONNX Runtime threads busy-wait between layers (faster only on an idle machine)
    gpu_precision: Literal["fp32", "fp16", "bf16"] = "fp16"  #: CUDA autocast dtype of the torch path
    pin_memory: bool = True  #: CUDA: page-locked host batches, copied without blocking
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


class RuntimeUnavailable(RuntimeError):
    """A runtime cannot run this encoder here (not installed, export or load failed)."""


class Backend(Protocol):
    """A compiled backbone: normalised images ``(B, 3, S, S)`` float32 → features ``(B, D)`` float32."""

    name: str
    precision: str

    def run(self, images: np.ndarray) -> np.ndarray: ...


def _import(runtime: str):
    """The runtime's Python module, or :class:`RuntimeUnavailable` naming the pip package."""
    package = RUNTIME_PACKAGES[runtime]
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise RuntimeUnavailable(f"runtime {runtime!r} needs the PyPI package {package} ({INSTALL_HINT[runtime]}), "
                                 f"which is not installed ({err})") from err


class OnnxRuntimeBackend:
    """ONNX Runtime, CPU execution provider, all graph optimisations (its NHWC layout transforms included)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int, precision: str = "fp32", spinning: bool = False):
        ort = _import("onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.precision = precision

    def run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0])


class OpenVinoBackend:
    """OpenVINO on the CPU: ``streams`` parallel single-threaded streams, a batch split between them."""

    name = "openvino"

    def __init__(self, path: Path, threads: int, streams: int | None = None, precision: str = "fp32"):
        ov = _import("openvino")
        core = ov.Core()
        self.streams = max(1, streams or threads)
        config = {
            "INFERENCE_NUM_THREADS": max(threads, self.streams),
            "NUM_STREAMS": self.streams,
            "PERFORMANCE_HINT": "THROUGHPUT",
            # bf16 is OpenVINO's default on CPUs with AVX-512 BF16: ask for it explicitly, f32 otherwise
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "CACHE_DIR": str(exported_dir() / "openvino-cache"),
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)
        self.precision = precision
        self._lock = threading.Lock()  # one batch at a time through the queue

    def run(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, np.float32)
        parts = [p for p in np.array_split(x, min(self.streams, len(x))) if len(p)]
        out: list[np.ndarray | None] = [None] * len(parts)

        def done(request, i: int) -> None:
            out[i] = request.get_output_tensor(0).data.copy()

        with self._lock:
            self.queue.set_callback(done)
            for i, part in enumerate(parts):
                self.queue.start_async({0: part}, i)
            self.queue.wait_all()
        return np.concatenate(out)  # type: ignore[arg-type]


#: compiled backends by (file, runtime, threads, streams, precision): a model is compiled once per process
_COMPILED: dict[tuple, Backend] = {}
_COMPILED_LOCK = threading.Lock()


def build_backend(runtime: str, encoder, cfg: RuntimeConfig) -> Backend:
    """Export ``encoder`` (cached) and compile it for ``runtime`` at ``cfg.precision``.

    Raises :class:`RuntimeUnavailable` when the package is missing, the precision does not exist on
    that runtime, or the export or compilation fails.
    """
    if runtime not in RUNTIME_PACKAGES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    _import(runtime)
    if cfg.precision == "bf16" and runtime != "openvino":
        raise RuntimeUnavailable(f"runtime {runtime!r} has no bf16 CPU kernels (bf16 is OpenVINO's)")
    try:
        path = export_onnx(encoder, cfg.opset)
        if cfg.precision == "int8":
            from .quantize import quantized_onnx

            path = quantized_onnx(encoder, path, cfg.calibration)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        raise RuntimeUnavailable(str(err)) from err
    threads = cfg.threads or torch.get_num_threads()
    key = (str(path), runtime, threads, cfg.streams, cfg.precision, cfg.onnx_spinning)
    with _COMPILED_LOCK:
        if key not in _COMPILED:
            try:
                if runtime == "onnx":
                    _COMPILED[key] = OnnxRuntimeBackend(path, threads, cfg.precision, cfg.onnx_spinning)
                else:
                    _COMPILED[key] = OpenVinoBackend(path, threads, cfg.streams, cfg.precision)
            except RuntimeUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - a runtime's own load errors: fall back
                raise RuntimeUnavailable(f"{runtime} could not load {path.name}: {type(err).__name__}: {err}") from err
        return _COMPILED[key]


def candidates(encoder, cfg: RuntimeConfig) -> list[str]:
    """Runtimes to try in turn for ``encoder``: ``cfg.use``, or for ``auto`` ``cfg.order`` restricted to the
    runtimes its spec lists as validated; torch always last."""
    if cfg.use != "auto":
        wanted = [cfg.use]
    else:
        validated = set(getattr(encoder.spec, "runtimes", ("torch",)))
        wanted = [r for r in cfg.order if r in validated]
    unknown = [r for r in wanted if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    return [r for r in wanted if r != "torch"] + ["torch"]


def attach_runtime(encoder, cfg: RuntimeConfig) -> str:
    """Choose where ``encoder``'s forward pass runs, set it on the encoder and log it → the runtime's name.

    On a CUDA device: torch with ``cfg.gpu_precision`` autocast. Otherwise the first of
    :func:`candidates` that builds; each one skipped is logged with the reason (a missing package is
    named with its ``pip install``).
    """
    if encoder.device.type == "cuda":
        encoder.set_backend(None, gpu_precision=cfg.gpu_precision, pin_memory=cfg.pin_memory)
        log.info("image encoder %s runs on torch, CUDA GPU %s, %s autocast", encoder.name,
                 torch.cuda.get_device_name(encoder.device), cfg.gpu_precision)
        return "torch"
    tried = candidates(encoder, cfg)
    for runtime in tried[:-1]:
        try:
            backend = build_backend(runtime, encoder, cfg)
        except RuntimeUnavailable as err:
            log.warning("%s; image encoder %s falls back to %s", err, encoder.name, tried[tried.index(runtime) + 1])
            continue
        encoder.set_backend(backend)
        log.info("image encoder %s runs on %s (%s, %d CPU threads)", encoder.name, runtime, cfg.precision,
                 cfg.threads or torch.get_num_threads())
        return runtime
    encoder.set_backend(None)
    log.info("image encoder %s runs on torch (fp32, %d CPU threads)", encoder.name, torch.get_num_threads())
    return "torch"


def runtime_config(runtime: str | RuntimeConfig | None = None, precision: str | None = None) -> RuntimeConfig:
    """The ``runtime:`` section of ``configs/encoders.yaml``, with ``runtime`` (a name) and ``precision``
    replacing its ``use`` and ``precision``; a :class:`RuntimeConfig` is returned as it is."""
    if isinstance(runtime, RuntimeConfig):
        return runtime if precision is None else replace(runtime, precision=precision)
    from ..config import load_config

    cfg = load_config(RuntimeConfig, "encoders", section="runtime")
    if runtime is not None and runtime not in ("auto", *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; choose one of auto, {', '.join(RUNTIMES)}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return replace(cfg, use=runtime or cfg.use, precision=precision or cfg.precision)
