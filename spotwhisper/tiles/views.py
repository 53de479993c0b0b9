"""Slides seen as another scanner or lab would give them: resampled to a coarser µm/px, stain-shifted.

A :class:`SlideView` wraps a :class:`~spotwhisper.io.slide.Slide` and is itself a slide, so the
whole pipeline (spot layout, tiles, features, their cache) runs on it unchanged:

* ``mpp`` — the slide as if scanned at that many µm per pixel: every region is read from the base
  slide (its best pyramid level) and shrunk with an antialiasing Lanczos filter, the way a
  Space Ranger ``tissue_hires_image.png`` (2–4 µm/px) is made. Never finer than the base slide.
* ``stain`` — a per-slide stain change applied to every region: :class:`HedShift` (scale and shift
  of the haematoxylin / eosin / DAB optical densities, Tellez et al. 2018) or
  :class:`StainTransfer` (Macenko: the slide's stain vectors mapped onto another slide's).

Training uses views as augmentation (copies of each section at other µm/px and stains);
the expression benchmark uses them as the shift sweep. Sizes stay in µm: a view reports its own
µm/px, so tiles of the same physical side are cut from it.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..io.her2st import read_her2st
from ..io.slide import Slide
from ..io.spatial import open_source_slide
from .config import AugmentConfig, StainConfig
from .stain import MacenkoNormalizer, StainMatrix, estimate_stains
from .tissue import tissue_mask_from_rgb


class StainChange(Protocol):
    """A per-slide colour change: uint8 RGB ``(h, w, 3)`` → same shape; ``describe`` for cache keys."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HedShift:
    """Optical densities in HED space scaled by ``scale`` and shifted by ``shift`` (each ``(3,)``)."""

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]

    @classmethod
    def random(cls, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.01) -> HedShift:
        """Scale ``1 + U(-sigma, sigma)``, shift ``U(-bias, bias)`` per channel (Tellez et al. 2018). The
        densities are scikit-image's ``rgb2hed`` units (optical density / 13.8): a bias of 0.05 there
        tints glass visibly, so the default is 0.01."""
        return cls(tuple(1 + rng.uniform(-sigma, sigma, 3)), tuple(rng.uniform(-bias, bias, 3)))  # type: ignore[arg-type]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from skimage.color import hed2rgb, rgb2hed

        hed = rgb2hed(rgb[..., :3])
        out = hed2rgb(hed * np.asarray(self.scale) + np.asarray(self.shift))
        return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        return {"kind": "hed", "scale": [round(v, 6) for v in self.scale], "shift": [round(v, 6) for v in self.shift]}


class StainTransfer:
    """Macenko: map a slide whose stains are ``source`` onto the stains of ``target``."""

    def __init__(self, source: StainMatrix, target: StainMatrix, cfg: StainConfig | None = None, name: str = ""):
        self._norm = MacenkoNormalizer(cfg)
        self._norm.source, self._norm.reference = source, target
        self.name = name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self._norm.transform(np.ascontiguousarray(rgb[..., :3]))

    def describe(self) -> dict[str, Any]:
        r = lambda m: np.round(np.asarray(m), 5).tolist()  # noqa: E731
        return {"kind": "macenko", "target": self.name, "source_he": r(self._norm.source.he),
                "target_he": r(self._norm.reference.he), "target_max_c": r(self._norm.reference.max_c)}


def slide_stains(slide: Slide, cfg: StainConfig | None = None, thumbnail_side: int = 2048) -> StainMatrix:
    """Macenko stain vectors of a slide, from the tissue pixels of its thumbnail."""
    thumb = slide.get_thumbnail(thumbnail_side)
    tissue = thumb[tissue_mask_from_rgb(thumb)]
    return estimate_stains(tissue[None] if len(tissue) >= 100 else thumb, cfg)


def resample_region(region: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The sub-pixel ``box`` (x0, y0, x1, y1) of ``region`` resampled to ``size`` (w, h), antialiased."""
    img = Image.fromarray(np.ascontiguousarray(region))
    return np.asarray(img.resize(size, Image.LANCZOS, box=box))


class SlideView(Slide):
    """``base`` as if scanned at ``mpp`` µm/px (``None`` or finer than the base: unchanged) and
    stained as ``stain`` says (``None``: unchanged). One level; reads come from the base's pyramid."""

    def __init__(self, base: Slide, mpp: float | None = None, stain: StainChange | None = None):
        if base.mpp is None:
            raise ValueError(f"{base.path}: µm per pixel unknown; a resampled view needs it (--mpp)")
        if mpp is not None and not mpp > 0:
            raise ValueError(f"view µm per pixel must be positive, got {mpp}")
        self.base, self.stain, self.path = base, stain, base.path
        self.factor = min(1.0, base.mpp / mpp) if mpp else 1.0  # view px per base px (≤ 1)
        w, h = base.dimensions
        self.level_dimensions = [(max(1, round(w * self.factor)), max(1, round(h * self.factor)))]
        self._mpp = base.mpp / self.factor

    def spec(self) -> dict[str, Any]:
        """What makes this view differ from its base (for cache keys and logs)."""
        return {"mpp": round(self._mpp, 4) if self.factor < 1 else None,
                "stain": self.stain.describe() if self.stain is not None else None}

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.factor == 1.0:
            out = self.base._read(0, x, y, w, h)
        else:
            f = self.factor
            bx0, by0, bx1, by1 = x / f, y / f, (x + w) / f, (y + h) / f  # base level-0 px
            lvl = self.base.best_level_for_downsample(1 / f)
            ds = self.base.level_downsamples[lvl]
            lw, lh = self.base.level_dimensions[lvl]
            ix0, iy0 = max(0, math.floor(bx0 / ds)), max(0, math.floor(by0 / ds))
            ix1, iy1 = min(lw, math.ceil(bx1 / ds)), min(lh, math.ceil(by1 / ds))
            region = self.base._read(lvl, ix0, iy0, ix1 - ix0, iy1 - iy0)
            box = (bx0 / ds - ix0, by0 / ds - iy0, min(bx1 / ds, ix1) - ix0, min(by1 / ds, iy1) - iy0)
            out = resample_region(region, box, (w, h))
        return self.stain(out) if self.stain is not None else out

    def get_thumbnail(self, max_side: int) -> np.ndarray:
        """The base's thumbnail (both shrink the same image), never larger than the view, stain applied."""
        thumb = self.base.get_thumbnail(min(max_side, max(self.dimensions)))
        return self.stain(thumb) if self.stain is not None else thumb

    def close(self) -> None:
        self.base.close()

    def __repr__(self) -> str:
        return f"SlideView({self.base!r}, {self.spec()})"


def view_of(slide: Slide, scale: float, mpp: float | None = None, stain: StainChange | None = None) -> tuple[SlideView, float]:
    """A :class:`SlideView` of ``slide`` and the factor mapping ``obsm["spatial"]`` onto it
    (``scale`` maps them onto ``slide``)."""
    view = SlideView(slide, mpp, stain)
    return view, scale * view.factor


def training_views(slide: Slide, scale: float, aug: AugmentConfig, key: str,
                   stains_of: Callable[[str], StainMatrix] | None = None) -> list[tuple[str, SlideView, float]]:
    """The augmented copies ``aug`` asks for of one training slide → ``(name, view, scale)`` each.

    HED shifts are drawn from a generator seeded by ``aug.seed`` and ``key`` (e.g. the section id),
    so a section always gets the same copies; ``stains_of(target)`` gives the stain vectors of a
    Macenko target (needed when ``aug.macenko_targets`` is not empty).
    """
    out: list[tuple[str, SlideView, float]] = []
    rng = np.random.default_rng([aug.seed, zlib.crc32(key.encode())])
    for i in range(aug.hed_copies):
        view, sc = view_of(slide, scale, stain=HedShift.random(rng, aug.hed_sigma, aug.hed_bias))
        out.append((f"hed{i + 1}", view, sc))
    for mpp in aug.mpp:
        view, sc = view_of(slide, scale, mpp=mpp)
        out.append((f"{mpp:g}um", view, sc))
    if aug.macenko_targets:
        if stains_of is None:
            raise ValueError("Macenko targets need stains_of(target) → stain vectors")
        source = slide_stains(slide)
        for target in aug.macenko_targets:
            if target == key:
                continue
            view, sc = view_of(slide, scale, stain=StainTransfer(source, stains_of(target), name=target))
            out.append((f"stain-{target}", view, sc))
    return out


def section_views(data_dir: str | Path | None, section: str, aug: AugmentConfig) -> list[tuple[str, SlideView, float]]:
    """The augmented copies of a her2st section's image → ``(name, view, scale)`` (:func:`training_views`)."""
    if not aug.n_copies:
        return []
    adata = read_her2st(data_dir, section, hires_max_side=64)
    slide, scale = open_source_slide(adata)
    return training_views(slide, scale, aug, section, stains_of=lambda s: her2st_stains(data_dir, s))


def her2st_stains(data_dir: str | Path | None, section: str) -> StainMatrix:
    """Macenko stain vectors of a her2st section's H&E image."""
    slide, _ = open_source_slide(read_her2st(data_dir, section, hires_max_side=64))
    return slide_stains(slide)
