"""µm per pixel of an uploaded slide: from the file, else from the spot table's pitch, else from the user.

Tiles are cut in µm (a 200 µm spot tile, 3 × 3 sub-tiles), so a wrong µm/px cuts tiles of the
wrong size and the models see tissue at the wrong magnification: a her2st JPEG at 0.73 µm/px read
as 0.5 gives tiles of 137 µm instead of 200, and regions the demo finds are missed.
:func:`resolve_mpp` decides, in this order:

1. the image file's metadata (OME ``PhysicalSizeX``, TIFF resolution, WSI properties, microscope DPI);
   a typed value that disagrees is reported, not used;
2. a value the user typed;
3. the spot table's pitch: the median distance between neighbouring spot centres in px, and the
   lattice — square = ST (200 µm pitch), hexagonal = Visium (100 µm pitch);
4. none: the upload is refused with :data:`ASK` (why it matters, where to find the value).

The chosen value and where it came from are returned for the UI to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotwhisper.io.slide import open_slide
from spotwhisper.io.technologies import ST, VISIUM

#: plausible µm/px of an H&E image (40x scan ≈ 0.25, Space Ranger hires ≈ 2–4); outside → not trusted
PLAUSIBLE = (0.05, 20.0)
#: a typed value differing from the file's by more than this fraction is flagged
DISAGREE = 0.1
ASK = ("µm per pixel unknown: the image file does not say and no spot table gives the spot pitch. Tiles are "
       "cut in µm (200 µm per spot), so a wrong value shows the models the tissue at the wrong magnification "
       "and regions are missed. Enter it under 'µm per pixel' — your scanner's metadata or the slide viewer "
       "shows it (40x ≈ 0.25, 20x ≈ 0.5; a Visium hires image ≈ 2–4) — or add the spot table (x, y).")


@dataclass
class MppChoice:
    """``value`` (µm/px, None = unknown) and ``source`` — ``"file"``, ``"you"``, ``"spot pitch"`` or ``"unknown"``."""

    value: float | None
    source: str
    note: str

    def sentence(self) -> str:
        if self.value is None:
            return ASK
        return f"{self.value:.3f} µm per pixel ({self.note})"


def lattice(xy: np.ndarray) -> tuple[float, str]:
    """``(pitch in px, "square" | "hexagonal")`` of spot centres ``(n, 2)``: the median nearest-
    neighbour distance, and hexagonal when spots have ~6 neighbours at that distance (square: 4)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=float)
    if len(xy) < 7:
        raise ValueError(f"need at least 7 spots to tell the spot pitch, got {len(xy)}")
    dist, _ = cKDTree(xy).query(xy, k=7)
    pitch = float(np.median(dist[:, 1]))
    near = (dist[:, 1:] < 1.2 * pitch).sum(axis=1)
    return pitch, ("hexagonal" if np.median(near) >= 5 else "square")


def from_spot_pitch(xy: np.ndarray) -> MppChoice | None:
    """µm/px from the spot lattice (square → ST 200 µm, hexagonal → Visium 100 µm), or None."""
    try:
        pitch, kind = lattice(xy)
    except ValueError:
        return None
    if not pitch > 0:  # spots on one point (read_spot_table refuses such tables)
        return None
    tech = VISIUM if kind == "hexagonal" else ST
    mpp = tech.spot_spacing_um / pitch
    if not PLAUSIBLE[0] <= mpp <= PLAUSIBLE[1]:
        return None
    return MppChoice(mpp, "spot pitch", f"estimated from the spot table: {pitch:.0f} px between spot centres on a "
                                        f"{kind} lattice, read as {tech.name} ({tech.spot_spacing_um:.0f} µm pitch)")


def resolve_mpp(image: str | Path, spots_xy: np.ndarray | None = None, typed: float | None = None) -> MppChoice:
    """Decide the µm/px of an upload (see the module docstring); never guesses a default."""
    with open_slide(image) as probe:
        from_file = probe.mpp
    if from_file is not None and not PLAUSIBLE[0] <= from_file <= PLAUSIBLE[1]:
        from_file = None
    if typed and not PLAUSIBLE[0] <= typed <= PLAUSIBLE[1]:
        raise ValueError(f"{typed:g} µm per pixel is not a plausible H&E resolution "
                         f"({PLAUSIBLE[0]:g}–{PLAUSIBLE[1]:g}; 40x ≈ 0.25, 20x ≈ 0.5)")
    if from_file:
        note = "read from the image file"
        if typed and abs(typed - from_file) > DISAGREE * from_file:
            note += f"; the {typed:g} you entered was not used"
        return MppChoice(float(from_file), "file", note)
    if typed:
        return MppChoice(float(typed), "you", "as you entered it")
    if spots_xy is not None:
        est = from_spot_pitch(spots_xy)
        if est is not None:
            return est
    return MppChoice(None, "unknown", "not known")

