"""One interface over slide images: JPEG/PNG, (OME-)TIFF and pyramidal whole-slide images.

:func:`open_slide` picks a backend by file type:

* ``PillowSlide`` – JPEG/PNG/BMP. These formats cannot be read by region, so the image is decoded
  once (up to :data:`MAX_INMEMORY_PIXELS`); thumbnails use JPEG draft mode and never decode fully.
* ``TiffSlideBackend`` – TIFF, OME-TIFF, SVS, NDPI … through ``tiffslide``: regions are read
  tile by tile from disk, so a 100k × 100k slide is never held in memory.
* ``OpenSlideBackend`` – other WSI formats (MRXS, SCN …) when ``openslide`` is installed.

Coordinates are level-0 pixels, ``(x, y)`` order; arrays are ``(height, width, 3)`` uint8 RGB.
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

#: Largest plain (non-tiled) image decoded into memory: 400 Mpx ≈ 1.2 GB RGB.
MAX_INMEMORY_PIXELS = 400_000_000
PIL_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".svs", ".ndpi", ".scn", ".bif", ".qptiff"}
OPENSLIDE_SUFFIXES = {".mrxs", ".vms", ".vmu", ".svslide"}
SUPPORTED = sorted(PIL_SUFFIXES | TIFF_SUFFIXES | OPENSLIDE_SUFFIXES)
#: Background value used to pad regions that reach past the slide edge (white glass).
PAD_VALUE = 255
#: Side (px) of the blocks a thumbnail is streamed in when no pyramid level is small enough.
THUMBNAIL_BLOCK_PX = 4096
# PIL's decompression-bomb guard (89 Mpx) is below an ordinary H&E image; our own limit applies
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_INMEMORY_PIXELS)


class SlideError(ValueError):
    """A slide is missing, unreadable or in an unsupported format."""


class Slide(abc.ABC):
    """A slide image read by region. Subclasses fill the level geometry and ``_read``."""

    path: Path
    level_dimensions: list[tuple[int, int]]
    _mpp: float | None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size ``(width, height)`` in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        w0 = self.level_dimensions[0][0]
        return [w0 / w for w, _ in self.level_dimensions]

    @property
    def mpp(self) -> float | None:
        """Micrometres per level-0 pixel, or ``None`` when unknown (see :meth:`set_mpp`)."""
        return self._mpp

    def set_mpp(self, mpp: float) -> None:
        """Set µm per pixel (from the user or from spot spacing); must be positive."""
        if not mpp > 0:
            raise ValueError(f"microns per pixel must be positive, got {mpp}")
        self._mpp = float(mpp)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-resolution-saving level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.001:
                best = i
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size=(w, h)`` pixels of ``level`` whose top-left is ``location`` (level-0 px).

        Parts outside the slide are padded with white. Returns ``(h, w, 3)`` uint8.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        # level coordinates of the request and the part that lies inside the slide
        lx, ly = int(round(location[0] / ds)), int(round(location[1] / ds))
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, lw), min(ly + h, lh)
        out = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            part = self._read(level, x0, y0, x1 - x0, y1 - y0)
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = part
        return out

    def read_scaled(self, box: tuple[float, float, float, float], out_px: int) -> np.ndarray:
        """Read level-0 box ``(x0, y0, x1, y1)`` resampled to ``out_px × out_px`` pixels.

        Uses the coarsest pyramid level that still has at least ``out_px`` pixels across the box.
        """
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        level = self.best_level_for_downsample(side / out_px)
        ds = self.level_downsamples[level]
        w = max(1, int(round((x1 - x0) / ds)))
        h = max(1, int(round((y1 - y0) / ds)))
        region = self.read_region((int(round(x0)), int(round(y0))), level, (w, h))
        if (w, h) != (out_px, out_px):
            region = np.asarray(Image.fromarray(region).resize((out_px, out_px), Image.BILINEAR))
        return region

    def get_thumbnail(self, max_side: int) -> np.ndarray:
        """Whole slide downsampled so its longer side is at most ``max_side`` px, ``(h, w, 3)``."""
        w0, h0 = self.dimensions
        scale = min(1.0, max_side / max(w0, h0))
        tw, th = max(1, int(round(w0 * scale))), max(1, int(round(h0 * scale)))
        level = self.best_level_for_downsample(1 / scale)
        lw, lh = self.level_dimensions[level]
        if lw * lh <= THUMBNAIL_BLOCK_PX**2:
            img = self._read(level, 0, 0, lw, lh)
            return np.asarray(Image.fromarray(img).resize((tw, th), Image.BILINEAR))
        # no small pyramid level: stream the level block by block, shrinking each block
        out = Image.new("RGB", (tw, th))
        fx, fy = tw / lw, th / lh
        for by in range(0, lh, THUMBNAIL_BLOCK_PX):
            for bx in range(0, lw, THUMBNAIL_BLOCK_PX):
                bw, bh = min(THUMBNAIL_BLOCK_PX, lw - bx), min(THUMBNAIL_BLOCK_PX, lh - by)
                x0, y0 = int(round(bx * fx)), int(round(by * fy))
                x1, y1 = int(round((bx + bw) * fx)), int(round((by + bh) * fy))
                if x1 > x0 and y1 > y0:
                    block = Image.fromarray(self._read(level, bx, by, bw, bh))
                    out.paste(block.resize((x1 - x0, y1 - y0), Image.BILINEAR), (x0, y0))
        return np.asarray(out)

    @abc.abstractmethod
    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Read an in-bounds region of ``level`` in level pixels → ``(h, w, 3)`` uint8 RGB."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp:.3f} µm/px" if self.mpp else "µm/px unknown"
        return f"{type(self).__name__}({self.path.name}, {w}×{h}, {self.level_count} level(s), {mpp})"


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = _rescale_to_uint8(arr)
    return np.ascontiguousarray(arr)


def _rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float32) / np.iinfo(arr.dtype).max * 255).astype(np.uint8)
    return (np.clip(arr, 0, 1) * 255).astype(np.uint8)


class PillowSlide(Slide):
    """JPEG/PNG slide: decoded lazily, once, on the first region read."""

    def __init__(self, path: Path, mpp: float | None = None):
        self.path = path
        self._mpp = mpp
        self._array: np.ndarray | None = None
        try:
            with Image.open(path) as im:
                self.level_dimensions = [im.size]
                dpi = im.info.get("dpi")
        except Exception as err:  # PIL raises many types
            raise SlideError(f"{path}: cannot read image ({err}); expected one of {SUPPORTED}") from err
        w, h = self.level_dimensions[0]
        if w * h > MAX_INMEMORY_PIXELS:
            raise SlideError(
                f"{path}: {w}×{h} px is too large for a plain {path.suffix} image "
                f"(limit {MAX_INMEMORY_PIXELS:,} px); convert it to a tiled pyramidal TIFF"
            )
        if self._mpp is None and dpi and dpi[0] and dpi[0] > 1000:  # only trust microscope-scale DPI
            self._mpp = 25400.0 / float(dpi[0])

    def _load(self) -> np.ndarray:
        if self._array is None:
            try:
                with Image.open(self.path) as im:
                    self._array = _to_rgb(np.asarray(im.convert("RGB")))
            except Exception as err:
                raise SlideError(f"{self.path}: image is truncated or corrupt ({err})") from err
        return self._array

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._load()[y : y + h, x : x + w]

    def get_thumbnail(self, max_side: int) -> np.ndarray:
        w0, h0 = self.dimensions
        scale = min(1.0, max_side / max(w0, h0))
        size = (max(1, int(round(w0 * scale))), max(1, int(round(h0 * scale))))
        if self._array is not None:
            return np.asarray(Image.fromarray(self._array).resize(size, Image.BILINEAR))
        try:
            with Image.open(self.path) as im:
                im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                return np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))
        except Exception as err:
            raise SlideError(f"{self.path}: image is truncated or corrupt ({err})") from err


class TiffSlideBackend(Slide):
    """TIFF / OME-TIFF / SVS through ``tiffslide``: lazy, tile-wise region reads."""

    def __init__(self, path: Path, mpp: float | None = None):
        import tiffslide

        self.path = path
        try:
            self._ts = tiffslide.TiffSlide(str(path))
            self.level_dimensions = [tuple(int(v) for v in d) for d in self._ts.level_dimensions]
        except Exception as err:  # tiffslide raises many types (NotImplementedError for odd axes)
            raise SlideError(f"{path}: {_empty_tiff(path) or f'cannot open as TIFF slide ({err})'}") from err
        meta_mpp = self._ts.properties.get("tiffslide.mpp-x") or _ome_mpp(path)
        self._mpp = mpp if mpp is not None else (float(meta_mpp) if meta_mpp else None)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        arr = self._ts.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h), as_array=True)
        return _to_rgb(arr)

    def close(self) -> None:
        self._ts.close()


def _empty_tiff(path: Path) -> str | None:
    """``"the image has no pixels (W × H px)"`` when the first page of a TIFF is empty, else None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            w, h = int(tf.pages[0].imagewidth), int(tf.pages[0].imagelength)
    except Exception:  # noqa: BLE001 - not readable: the caller reports its own error
        return None
    return f"the image has no pixels ({w} × {h} px)" if w <= 0 or h <= 0 else None


_OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _ome_mpp(path: Path) -> float | None:
    """µm per pixel from OME-XML ``PhysicalSizeX`` (with its unit), or ``None``."""
    import xml.etree.ElementTree as ET

    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            xml = tf.ome_metadata if tf.is_ome else None
        if not xml:
            return None
        for el in ET.fromstring(xml).iter():
            if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
                unit = el.attrib.get("PhysicalSizeXUnit", "µm")
                return float(el.attrib["PhysicalSizeX"]) * _OME_UNITS_UM.get(unit, 1.0)
    except (ET.ParseError, ValueError, OSError):
        return None
    return None


class OpenSlideBackend(Slide):
    """Any format OpenSlide reads (needs the optional ``openslide-python`` + ``openslide-bin``)."""

    def __init__(self, path: Path, mpp: float | None = None):
        try:
            import openslide
        except ImportError as err:
            raise SlideError(f"{path}: this format needs `pip install openslide-python openslide-bin`") from err
        self.path = path
        try:
            self._os = openslide.OpenSlide(str(path))
        except Exception as err:
            raise SlideError(f"{path}: OpenSlide cannot read it ({err})") from err
        self.level_dimensions = [tuple(int(v) for v in d) for d in self._os.level_dimensions]
        meta_mpp = self._os.properties.get("openslide.mpp-x")
        self._mpp = mpp if mpp is not None else (float(meta_mpp) if meta_mpp else None)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        img = self._os.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        return _to_rgb(np.asarray(img))

    def close(self) -> None:
        self._os.close()


class ArraySlide(Slide):
    """An in-memory RGB array as a slide (uploads, tests, Visium hires images)."""

    def __init__(self, array: np.ndarray, mpp: float | None = None, name: str = "array"):
        self.path = Path(name)
        self._array = _to_rgb(array)
        self._mpp = mpp
        self.level_dimensions = [(self._array.shape[1], self._array.shape[0])]

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._array[y : y + h, x : x + w]


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a slide image by file type; ``mpp`` (µm per pixel) overrides the file's metadata.

    Raises :class:`SlideError` naming the file when it is missing, unreadable or unsupported.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such slide image")
    if p.is_dir():
        raise SlideError(f"{p}: is a folder, expected an image file ({', '.join(SUPPORTED)})")
    suffix = p.suffix.lower()
    backend = {**dict.fromkeys(PIL_SUFFIXES, PillowSlide), **dict.fromkeys(TIFF_SUFFIXES, TiffSlideBackend),
               **dict.fromkeys(OPENSLIDE_SUFFIXES, OpenSlideBackend)}.get(suffix)
    if backend is None:
        raise SlideError(f"{p}: unsupported slide format {suffix!r}; expected one of {', '.join(SUPPORTED)}")
    slide = backend(p, mpp)
    w, h = slide.level_dimensions[0] if slide.level_dimensions else (0, 0)
    if w <= 0 or h <= 0 or any(lw <= 0 or lh <= 0 for lw, lh in slide.level_dimensions):
        slide.close()
        raise SlideError(f"{p}: the image has no pixels ({w} × {h} px)")
    return slide
