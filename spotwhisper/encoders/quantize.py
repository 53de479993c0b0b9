"""int8 static post-training quantisation of an exported encoder, calibrated on her2st tiles.

:func:`quantized_onnx` runs ``onnxruntime.quantization.quantize_static`` on the fp32 ONNX file of
:mod:`.onnx_export`: QDQ format (which both ONNX Runtime and OpenVINO execute with int8 kernels — VNNI on
this CPU), int8 weights (per output channel by default), uint8 activations whose ranges come from
real tiles: the spot tiles and 3 × 3 sub-tiles of ``calibration.spots_per_section`` spots of each
calibration section (default C3–C6, so features can be judged on C2 and B4, which it never saw).
The file is cached beside the fp32 one, keyed by it and by the calibration settings and images.

Measured (``benchmarks/runtime_speed.py``): on EfficientNet-Lite0 the per-tile cosine of int8
features to torch fp32 stays well below 0.995, so int8 is an opt-in setting, not the default.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..cache import cache_key
from .backends import CalibrationConfig
from .onnx_export import INPUT_NAME
from .registry import ImageEncoder

log = logging.getLogger(__name__)

#: images per calibration batch
CALIBRATION_BATCH = 8


def _calibration_slides(cfg: CalibrationConfig, data_dir: str | os.PathLike | None) -> list[tuple]:
    """``(adata, slide, scale)`` of each calibration section; ``DataDirError`` without the data."""
    from ..datadir import resolve_data_dir
    from ..io import open_source_slide, read_her2st

    root = resolve_data_dir(data_dir)
    out = []
    for section in cfg.sections:
        adata = read_her2st(root, section)
        out.append((adata, *open_source_slide(adata)))
    return out


def calibration_tiles(encoder: ImageEncoder, cfg: CalibrationConfig, slides: list[tuple]) -> np.ndarray:
    """Normalised calibration images ``(N, 3, S, S)`` float32: of each section in ``slides``
    (:func:`_calibration_slides`) its first ``spots_per_section`` spots, tile + g × g sub-tiles."""
    from ..config import load_config
    from ..tiles import TileConfig, iter_tile_batches, spot_layout

    tile_cfg = load_config(TileConfig, "tiles")
    images = []
    for adata, slide, scale in slides:
        layout = spot_layout(adata, slide, scale, tile_cfg.spot)
        idx = np.arange(min(cfg.spots_per_section, len(layout)))
        for b in iter_tile_batches(slide, layout, encoder.image_size, CALIBRATION_BATCH, indices=idx, progress=False):
            tiles = np.concatenate([b.tiles[:, None], b.subtiles], axis=1).reshape(-1, *b.tiles.shape[1:])
            images.append(encoder.preprocess(tiles).numpy())
    return np.concatenate(images)


def quantized_onnx(encoder: ImageEncoder, fp32_path: Path, cfg: CalibrationConfig,
                   data_dir: str | os.PathLike | None = None) -> Path:
    """The int8 QDQ model of ``fp32_path`` (see the module docstring), quantised once and then reused."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise RuntimeError(f"int8 quantisation needs the PyPI package onnxruntime (`pip install onnxruntime`): {err}") from err
    from .feature_cache import slide_fingerprint

    slides = _calibration_slides(cfg, data_dir)
    key = cache_key(fp32_path.stem, [slide_fingerprint(s) for _, s, _ in slides], cfg.sections, cfg.spots_per_section,
                    cfg.method, cfg.per_channel)
    path = fp32_path.with_name(f"{fp32_path.stem}.int8-{key}.onnx")
    if path.is_file():
        return path
    images = calibration_tiles(encoder, cfg, slides)

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    log.info("%s: int8 static quantisation, %d calibration tiles of %s (%s) → %s", encoder.name, len(images),
             ", ".join(cfg.sections), cfg.method, path)
    with atomic_file(path.with_suffix(".pre.onnx"), suffix=".part.onnx") as pre, atomic_file(path, suffix=".part.onnx") as tmp:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Tiles(), quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, cfg.method))
    path.with_suffix(".pre.onnx").unlink(missing_ok=True)
    return path
