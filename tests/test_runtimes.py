"""Encoder runtimes: torch, ONNX Runtime and OpenVINO agree on real her2st tiles; a missing runtime falls
back to torch with a message naming its pip package; device choice (CUDA path) is tested on the CPU."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import torch

from spotwhisper.encoders import backends, create_encoder
from spotwhisper.encoders.backends import RuntimeConfig, attach_runtime, candidates, runtime_config
from spotwhisper.encoders.runtime import resolve_device

#: per-tile cosine of a runtime's features to torch fp32 that counts as the same features (issue 22)
MIN_COSINE = 0.995


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def real_tiles(data_dir, c2):
    """Spot tiles and their 3×3 sub-tiles of 3 spots of C2 and 3 of B4 at 224 px: ``(60, 224, 224, 3)`` uint8."""
    from spotwhisper.config import load_config
    from spotwhisper.io import open_source_slide, read_her2st
    from spotwhisper.tiles import TileConfig, iter_tile_batches, spot_layout

    spot_cfg = load_config(TileConfig, "tiles").spot
    out = []
    for adata in (c2, read_her2st(data_dir, "B4")):
        slide, scale = open_source_slide(adata)
        layout = spot_layout(adata, slide, scale, spot_cfg)
        idx = np.linspace(0, len(layout) - 1, 3).astype(int)
        for b in iter_tile_batches(slide, layout, 224, 8, indices=idx, progress=False):
            out.append(np.concatenate([b.tiles[:, None], b.subtiles], axis=1).reshape(-1, 224, 224, 3))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def torch_features(real_tiles):
    return create_encoder("efficientnet_lite0", runtime="torch").encode(real_tiles)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_runtime_agrees_with_torch_on_real_tiles(runtime, real_tiles, torch_features):
    pytest.importorskip(backends.RUNTIME_PACKAGES[runtime])
    enc = create_encoder("efficientnet_lite0", runtime=runtime)
    assert enc.runtime == runtime and enc.runtime_id == f"{runtime}-fp32"
    feats = enc.encode(real_tiles, batch_size=32)
    assert feats.shape == torch_features.shape and feats.dtype == np.float32
    assert _cosine(feats, torch_features).min() >= MIN_COSINE
    np.testing.assert_allclose(feats, torch_features, atol=1e-3)  # fp32: the same network, other kernels


def test_auto_picks_the_first_installed_runtime_of_the_order(caplog):
    order = [r for r in ("openvino", "onnx") if importlib.util.find_spec(backends.RUNTIME_PACKAGES[r])]
    with caplog.at_level(logging.INFO, logger="spotwhisper.encoders.backends"):
        enc = create_encoder("efficientnet_lite0", runtime=RuntimeConfig(use="auto", order=[*order, "torch"]))
    assert enc.runtime == (order[0] if order else "torch")
    assert f"runs on {enc.runtime}" in caplog.text


def test_missing_runtime_falls_back_to_torch_naming_the_package(monkeypatch, caplog, real_tiles, torch_features):
    real_import = importlib.import_module

    def no_openvino(name, *args, **kwargs):
        if name.split(".")[0] == "openvino":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(backends.importlib, "import_module", no_openvino)
    with caplog.at_level(logging.INFO, logger="spotwhisper.encoders.backends"):
        enc = create_encoder("efficientnet_lite0", runtime=RuntimeConfig(use="openvino"))
    assert enc.runtime == "torch" and enc.backend is None
    assert "pip install openvino" in caplog.text and "falls back to torch" in caplog.text
    np.testing.assert_allclose(enc.encode(real_tiles[:4]), torch_features[:4], atol=1e-4)  # torch, another batch size


def test_auto_keeps_unvalidated_encoders_on_torch():
    enc = create_encoder("stain_stats", runtime="auto")
    assert enc.runtime == "torch"
    assert candidates(enc, RuntimeConfig(use="auto")) == ["torch"]
    assert candidates(enc, RuntimeConfig(use="onnx")) == ["onnx", "torch"]  # asked for by name: tried


def test_runtime_settings_are_checked():
    with pytest.raises(ValueError, match="unknown runtime"):
        runtime_config("tensorrt")
    with pytest.raises(ValueError, match="unknown precision"):
        runtime_config("onnx", "fp8")
    cfg = runtime_config("torch", "int8")  # the shipped configs/encoders.yaml, overridden
    assert (cfg.use, cfg.precision) == ("torch", "int8") and cfg.calibration.sections


def test_bf16_is_openvino_only(caplog):
    pytest.importorskip("onnxruntime")
    with caplog.at_level(logging.WARNING, logger="spotwhisper.encoders.backends"):
        enc = create_encoder("efficientnet_lite0", runtime=runtime_config("onnx", "bf16"))
    assert enc.runtime == "torch" and "no bf16" in caplog.text


class _CudaStandIn:
    """What :func:`attach_runtime` reads of an encoder on a CUDA device (no GPU needed)."""

    name = "efficientnet_lite0"
    device = torch.device("cuda", 0)

    def set_backend(self, backend=None, gpu_precision="fp32", pin_memory=False):
        self.chosen = (backend, gpu_precision, pin_memory)


def test_cuda_device_runs_torch_with_autocast_and_pinned_memory(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in GPU")
    enc = _CudaStandIn()
    with caplog.at_level(logging.INFO, logger="spotwhisper.encoders.backends"):
        assert attach_runtime(enc, RuntimeConfig(use="openvino", gpu_precision="bf16")) == "torch"
    assert enc.chosen == (None, "bf16", True)
    assert "CUDA GPU Stand-in GPU, bf16 autocast" in caplog.text


def test_auto_device_is_cuda_only_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_half_precision_agrees_with_cpu_fp32(real_tiles, torch_features):
    enc = create_encoder("efficientnet_lite0", device="cuda", runtime=RuntimeConfig(gpu_precision="fp16"))
    assert enc.runtime_id == "torch-fp16"
    assert _cosine(enc.encode(real_tiles), torch_features).min() >= MIN_COSINE


def test_ivf_training_uses_faiss_gpus_when_present(monkeypatch, caplog):
    import faiss

    from spotwhisper.index import factory

    moved = []
    monkeypatch.setattr(factory, "gpus_available", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or index, raising=False)
    sample = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    with caplog.at_level(logging.INFO, logger="spotwhisper.index.factory"):
        index = factory.train_index("IVF8,Flat", 16, sample, gpu="auto")
    assert index.is_trained and len(moved) == 1 and "training 8 inverted lists on 2 GPU(s)" in caplog.text
    factory.train_index("IVF8,Flat", 16, sample, gpu="off")
    assert len(moved) == 1  # "off": the CPU, whatever faiss sees


@pytest.mark.skipif(not hasattr(__import__("faiss"), "StandardGpuResources"), reason="needs faiss-gpu (the [gpu] extra)")
def test_faiss_gpu_trains_and_searches():
    from spotwhisper.index.factory import gpus_available, to_search_device, train_index

    if gpus_available() == 0:
        pytest.skip("faiss-gpu sees no GPU")
    x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = train_index("IVF16,Flat", 32, x, gpu="auto")
    index.add(x)
    _, ids = to_search_device(index, "auto").search(x[:5], 1)
    assert ids[:, 0].tolist() == list(range(5))
