"""Route A: the ROSIE model (Wu et al., Nature Communications 2025) — H&E → 50 CODEX markers.

Architecture: torchvision ConvNeXt-Small whose last classifier layer has 50 outputs. Input: a
128 × 128 px H&E window at ROSIE's resolution, resized to 224 × 224 and normalised with ImageNet
mean/std; output: the expected mean of the centre 8 × 8 px of each marker.

Resolution: ROSIE's paired H&E/CODEX images are given as 0.3775 µm/px in public re-implementations
citing the paper (the classic CODEX 20× pixel size); LazySlide's wrapper assumes 0.25 µm/px
instead. The value is ``rosie.mpp`` in ``configs/proteins.yaml`` — check it against the weights
you use.

Weights are never downloaded: :func:`load_rosie` reads a local checkpoint (the released
``best_model_single.pth`` holds ``{"model_state_dict": ...}`` saved from ``nn.DataParallel``,
whose ``module.`` prefixes are stripped). Sliding-window inference (:func:`predict_map`) reads
windows from any :class:`~spotwhisper.io.slide.Slide` and returns a marker map that
:meth:`ProteinMap.sample` turns into per-spot values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_file
from ..io.slide import Slide
from .config import RosieConfig
from .panel import ROSIE_MARKERS

log = logging.getLogger(__name__)


class RosieWeightsError(ValueError):
    """A ROSIE checkpoint is missing, unreadable or does not fit the architecture."""


def build_rosie_model(n_outputs: int = len(ROSIE_MARKERS), block_setting: Sequence | None = None) -> nn.Module:
    """ConvNeXt with an ``n_outputs`` regression head, randomly initialised.

    ``block_setting=None`` gives the ROSIE architecture (torchvision ``convnext_small``, ~50M
    parameters); a list of ``torchvision.models.convnext.CNBlockConfig`` builds a small ConvNeXt
    with the same head for tests and experiments.
    """
    from torchvision.models import convnext

    if block_setting is None:
        model = convnext.convnext_small(weights=None)
    else:
        model = convnext.ConvNeXt(list(block_setting), stochastic_depth_prob=0.0)
    head = model.classifier[2]
    model.classifier[2] = nn.Linear(head.in_features, n_outputs)
    return model


def _state_dict_from(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RosieWeightsError(
            f"{path}: expected a state dict (or a dict with 'model_state_dict'), got {type(obj).__name__}"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_rosie_weights(model: nn.Module, path: str | Path, weights_only: bool = True) -> nn.Module:
    """Load a local ROSIE checkpoint into ``model`` (strict); returns ``model`` in eval mode.

    ``weights_only=True`` refuses pickled Python objects; pass ``False`` only for a file you trust.
    """
    p = Path(path)
    if not p.is_file():
        raise RosieWeightsError(f"{p}: no such ROSIE weights file (request the weights from the ROSIE authors)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        hint = " (it holds pickled objects: load with weights_only=False if you trust the file)" if weights_only else ""
        raise RosieWeightsError(f"{p}: cannot read checkpoint{hint}: {err}") from err
    state = _state_dict_from(obj, p)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise RosieWeightsError(
            f"{p}: weights do not fit the ROSIE architecture (ConvNeXt-Small, {len(ROSIE_MARKERS)} outputs): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {mismatched[:5]}"
        )
    model.load_state_dict(state)
    return model.eval()


def load_rosie(path: str | Path, weights_only: bool = True) -> nn.Module:
    """The ROSIE ConvNeXt-Small with the weights of a local checkpoint, in eval mode."""
    return load_rosie_weights(build_rosie_model(), path, weights_only=weights_only)


def preprocess_windows(windows: np.ndarray, cfg: RosieConfig) -> torch.Tensor:
    """uint8 windows ``(B, h, w, 3)`` → float tensor ``(B, 3, input_px, input_px)``, ImageNet-normalised."""
    x = torch.from_numpy(np.array(windows, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != cfg.input_px or x.shape[-2] != cfg.input_px:
        x = F.interpolate(x, size=(cfg.input_px, cfg.input_px), mode="bilinear", align_corners=False)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x - mean) / std


def predict_windows(model: nn.Module, windows: np.ndarray, cfg: RosieConfig) -> np.ndarray:
    """Marker predictions ``(B, n_outputs)`` float32 for uint8 windows ``(B, h, w, 3)``."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), cfg.batch_size):
            x = preprocess_windows(windows[start : start + cfg.batch_size], cfg).to(device)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class ProteinMap:
    """Marker map from sliding windows: ``values`` ``(C, Y', X')`` float32 (NaN = glass / not computed);
    cell ``(i, j)`` is the window centred at ``origin + (j, i) * step`` in slide level-0 pixels."""

    values: np.ndarray
    origin: tuple[float, float]
    step: float
    markers: list[str]
    slide_mpp: float

    @property
    def centres(self) -> np.ndarray:
        """Window centres ``(Y' * X', 2)`` (x, y) in slide pixels, row-major like ``values[c].ravel()``."""
        ny, nx = self.values.shape[1:]
        jj, ii = np.meshgrid(np.arange(nx), np.arange(ny))
        return np.column_stack([self.origin[0] + jj.ravel() * self.step, self.origin[1] + ii.ravel() * self.step])

    def sample(self, coords: np.ndarray, radius_px: float | None = None) -> np.ndarray:
        """Per-spot values ``(n, C)`` at slide-pixel ``coords`` ``(n, 2)``.

        With ``radius_px`` the NaN-aware mean of all computed cells within that radius (the spot
        disk); otherwise — or where no computed cell is that close — the nearest computed cell.
        """
        coords = np.asarray(coords, dtype=float)
        flat = self.values.reshape(self.values.shape[0], -1).T  # (cells, C)
        ok = np.isfinite(flat).any(axis=1)
        out = np.full((len(coords), flat.shape[1]), np.nan, dtype=np.float32)
        if not ok.any():
            return out
        centres, cells = self.centres[ok], flat[ok]
        tree = cKDTree(centres)
        _, nearest = tree.query(coords)
        out[:] = cells[nearest]
        if radius_px:
            for i, hits in enumerate(tree.query_ball_point(coords, r=radius_px)):
                if hits:
                    out[i] = np.nanmean(cells[hits], axis=0)
        return out


def _grid(start: float, stop: float, step: float) -> np.ndarray:
    return start + step * np.arange(max(1, int(math.floor((stop - start) / step)) + 1))


def predict_map(
    model: nn.Module,
    slide: Slide,
    cfg: RosieConfig | None = None,
    region: tuple[float, float, float, float] | None = None,
    near: np.ndarray | None = None,
    near_radius_px: float | None = None,
    markers: Sequence[str] = ROSIE_MARKERS,
) -> ProteinMap:
    """Slide ROSIE over ``region`` (level-0 box ``x0, y0, x1, y1``; default the whole slide).

    Windows are ``cfg.window_px`` ROSIE pixels (``cfg.mpp`` µm each) centred every
    ``cfg.stride_px`` ROSIE pixels; glass windows (mean RGB above ``cfg.background_threshold``)
    are skipped. With ``near`` (slide-pixel points ``(n, 2)``) only windows within
    ``near_radius_px`` of a point are computed — the rest of the map stays NaN.
    """
    cfg = cfg or RosieConfig()
    if slide.mpp is None:
        raise ValueError(
            f"{slide.path}: µm per pixel unknown; set it (slide.set_mpp) so windows match ROSIE's {cfg.mpp} µm/px"
        )
    scale = cfg.mpp / slide.mpp  # slide pixels per ROSIE pixel
    step = cfg.stride_px * scale
    x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, *map(float, slide.dimensions))
    xs, ys = _grid(x0, x1, step), _grid(y0, y1, step)
    size_mb = len(markers) * len(xs) * len(ys) * 4 / 2**20
    if size_mb > cfg.max_map_mb:
        raise ValueError(
            f"{slide.path}: a {len(ys)} × {len(xs)} window map of {len(markers)} markers needs {size_mb:.0f} MB "
            f"(limit rosie.max_map_mb = {cfg.max_map_mb:.0f}); raise rosie.stride_px or give a smaller region"
        )
    values = np.full((len(markers), len(ys), len(xs)), np.nan, dtype=np.float32)
    wanted = np.ones((len(ys), len(xs)), dtype=bool)
    if near is not None:
        jj, ii = np.meshgrid(np.arange(len(xs)), np.arange(len(ys)))
        cells = np.column_stack([xs[jj.ravel()], ys[ii.ravel()]])
        dist, _ = cKDTree(np.asarray(near, dtype=float)).query(cells)
        wanted = (dist <= (near_radius_px or step)).reshape(wanted.shape)
    k = max(1, cfg.chunk_windows)
    side = (k - 1) * cfg.stride_px + cfg.window_px  # chunk side in ROSIE pixels
    half = cfg.window_px / 2 * scale
    model.eval()
    buffer: list[np.ndarray] = []
    where: list[tuple[int, int]] = []

    def flush() -> None:
        if not buffer:
            return
        pred = predict_windows(model, np.stack(buffer), cfg)
        if pred.shape[1] != len(markers):
            raise ValueError(f"model has {pred.shape[1]} outputs, expected {len(markers)} markers")
        for (i, j), p in zip(where, pred):
            values[:, i, j] = p
        buffer.clear()
        where.clear()

    bar = tqdm(total=int(wanted.sum()), desc="ROSIE windows", unit="win")
    for ci in range(0, len(ys), k):
        for cj in range(0, len(xs), k):
            block = wanted[ci : ci + k, cj : cj + k]
            if not block.any():
                continue
            bx, by = xs[cj] - half, ys[ci] - half
            chunk = slide.read_scaled((bx, by, bx + side * scale, by + side * scale), side)
            for di, dj in zip(*np.nonzero(block)):
                oy, ox = di * cfg.stride_px, dj * cfg.stride_px
                win = chunk[oy : oy + cfg.window_px, ox : ox + cfg.window_px]
                bar.update(1)
                if win.mean() > cfg.background_threshold:
                    continue
                buffer.append(win)
                where.append((ci + di, cj + dj))
                if len(buffer) >= cfg.batch_size:
                    flush()
    flush()
    bar.close()
    done = int(np.isfinite(values[0]).sum())
    log.info("ROSIE: %d of %d windows computed (%d glass)", done, values[0].size, int(wanted.sum()) - done)
    return ProteinMap(
        values=values,
        origin=(float(xs[0]), float(ys[0])),
        step=float(step),
        markers=list(markers),
        slide_mpp=float(slide.mpp),
    )


def save_rosie_checkpoint(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Save ``{"model_state_dict": ..., "markers": [...], **extra}`` atomically (loadable by :func:`load_rosie_weights`)."""
    p = Path(path)
    with atomic_file(p) as tmp:
        torch.save({"model_state_dict": model.state_dict(), "markers": list(ROSIE_MARKERS), **(extra or {})}, tmp)
    return p
