"""Train the ROSIE model on paired, registered H&E + multiplex images (masked MSE).

Each training image is a :class:`PairedImage`: an RGB H&E ``(H, W, 3)`` uint8 and a multiplex
stack ``(C, H, W)`` on the same pixel grid at ROSIE's resolution, plus which of the ``C`` panel
markers were actually stained (studies stain different panels). A training example is a
``window_px`` window of H&E; its target is the mean of the centre ``centre_px × centre_px`` pixels
of every marker; the loss is the MSE over the markers that were stained and are finite
(masked MSE), as in ROSIE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import RosieConfig, RosieTrainConfig
from .panel import ProteinPanel, find_marker, load_protein_panel
from .rosie import preprocess_windows

log = logging.getLogger(__name__)


@dataclass
class PairedImage:
    """One registered H&E / multiplex pair at ROSIE's resolution.

    ``he`` ``(H, W, 3)`` uint8; ``mif`` ``(C, H, W)`` float32 in panel order; ``stained`` ``(C,)``
    bool — markers not stained in this image are masked out of the loss; ``name`` for messages.
    """

    he: np.ndarray
    mif: np.ndarray
    stained: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.he.ndim != 3 or self.he.shape[2] != 3 or self.he.dtype != np.uint8:
            raise ValueError(f"{self.name or 'pair'}: H&E must be (H, W, 3) uint8, got {self.he.shape} {self.he.dtype}")
        if self.mif.ndim != 3 or self.mif.shape[1:] != self.he.shape[:2]:
            raise ValueError(
                f"{self.name or 'pair'}: multiplex must be (C, H, W) on the H&E grid {self.he.shape[:2]}, got {self.mif.shape}"
            )
        if self.stained is None:
            self.stained = np.ones(self.mif.shape[0], dtype=bool)
        if self.stained.shape != (self.mif.shape[0],):
            raise ValueError(f"{self.name or 'pair'}: stained must have one flag per marker ({self.mif.shape[0]})")


def centre_targets(mif: np.ndarray, centres: np.ndarray, centre_px: int) -> np.ndarray:
    """Mean of the ``centre_px × centre_px`` pixels around each centre: ``(n, C)`` from ``mif`` ``(C, H, W)``."""
    lo = centre_px // 2
    out = np.empty((len(centres), mif.shape[0]), dtype=np.float32)
    for k, (x, y) in enumerate(np.asarray(centres, dtype=int)):
        out[k] = mif[:, y - lo : y - lo + centre_px, x - lo : x - lo + centre_px].mean(axis=(1, 2))
    return out


@dataclass
class PairedWindows(Dataset):
    """Windows drawn at random from paired images; ``resample(epoch)`` draws a new set.

    Items: ``(x (3, input_px, input_px) float, target (C,) float, mask (C,) bool)``.
    """

    images: list[PairedImage]
    cfg: RosieConfig = field(default_factory=RosieConfig)
    windows_per_image: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        small = [p.name for p in self.images if min(p.he.shape[:2]) < self.cfg.window_px]
        if small:
            raise ValueError(f"images smaller than a {self.cfg.window_px}px window: {small}")
        self.resample(0)

    def resample(self, epoch: int) -> None:
        rng = np.random.default_rng((self.seed, epoch))
        half = self.cfg.window_px // 2
        self.index: list[tuple[int, int, int]] = []
        for i, p in enumerate(self.images):
            h, w = p.he.shape[:2]
            xs = rng.integers(half, w - half + 1, self.windows_per_image)
            ys = rng.integers(half, h - half + 1, self.windows_per_image)
            self.index += [(i, int(x), int(y)) for x, y in zip(xs, ys)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, x, y = self.index[k]
        p = self.images[i]
        half = self.cfg.window_px // 2
        window = p.he[y - half : y - half + self.cfg.window_px, x - half : x - half + self.cfg.window_px]
        target = centre_targets(p.mif, np.array([[x, y]]), self.cfg.centre_px)[0]
        mask = p.stained & np.isfinite(target)
        xt = preprocess_windows(window[None], self.cfg)[0]
        return xt, torch.from_numpy(np.nan_to_num(target)), torch.from_numpy(mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is true (0 when none is)."""
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 32) -> dict[str, np.ndarray | float]:
    """Predictions, targets and masks over ``data``; also the masked MSE (``loss``)."""
    device = next(model.parameters()).device
    model.eval()
    preds, targets, masks = [], [], []
    with torch.inference_mode():
        for x, t, m in DataLoader(data, batch_size=batch_size):
            preds.append(model(x.to(device)).float().cpu())
            targets.append(t)
            masks.append(m)
    pred, target, mask = torch.cat(preds), torch.cat(targets), torch.cat(masks)
    return {
        "pred": pred.numpy(),
        "target": target.numpy(),
        "mask": mask.numpy(),
        "loss": float(masked_mse(pred, target, mask)),
    }


def train_rosie(
    model: nn.Module,
    train: PairedWindows,
    cfg: RosieTrainConfig | None = None,
    val: Dataset | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with AdamW on masked MSE; returns per-epoch ``train_loss`` (and ``val_loss``)."""
    cfg = cfg or RosieTrainConfig()
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        train.resample(epoch)
        model.train()
        total, n = 0.0, 0
        loader = DataLoader(
            train, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed + epoch)
        )
        for x, t, m in tqdm(loader, desc=f"ROSIE epoch {epoch + 1}/{cfg.epochs}", leave=False):
            loss = masked_mse(model(x.to(device)), t.to(device), m.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        row = {"epoch": epoch + 1, "train_loss": total / max(n, 1)}
        if val is not None:
            row["val_loss"] = float(evaluate(model, val, cfg.batch_size)["loss"])
        log.info("ROSIE epoch %d: %s", epoch + 1, row)
        history.append(row)
    return history


def load_pair(he_path: str | Path, mif_path: str | Path, panel: ProteinPanel | None = None) -> PairedImage:
    """Read a registered pair: an RGB H&E image and an OME-TIFF multiplex stack ``(C, H, W)``.

    Multiplex channels are matched to the panel by their OME channel names (synonyms allowed,
    e.g. "Pan-Cytokeratin" → PanCK); unmatched channels are ignored and unstained markers masked.
    """
    from PIL import Image

    from .ome_tiff import read_ome_tiff

    panel = panel or load_protein_panel()
    with Image.open(he_path) as im:
        he = np.asarray(im.convert("RGB"))
    stack, names, _ = read_ome_tiff(mif_path)
    mif = np.full((len(panel), *stack.shape[1:]), np.nan, dtype=np.float32)
    stained = np.zeros(len(panel), dtype=bool)
    for c, name in enumerate(names):
        marker = find_marker(name, panel)
        if marker is None:
            log.warning("%s: channel %r is not a panel marker; ignored", mif_path, name)
            continue
        j = panel.index(marker)
        mif[j], stained[j] = stack[c], True
    if not stained.any():
        raise ValueError(f"{mif_path}: no channel name matches a panel marker (names: {names[:10]})")
    return PairedImage(he=he, mif=mif, stained=stained, name=Path(he_path).stem)
