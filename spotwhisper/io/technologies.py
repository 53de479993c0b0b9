"""Physical spot geometry of spatial transcriptomics platforms (µm), for µm-per-pixel estimates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Technology:
    """Spot diameter and centre-to-centre distance of nearest spots, in µm."""

    name: str
    spot_diameter_um: float
    spot_spacing_um: float


ST = Technology("ST", spot_diameter_um=100.0, spot_spacing_um=200.0)
VISIUM = Technology("Visium", spot_diameter_um=55.0, spot_spacing_um=100.0)

#: Space Ranger's ``spot_diameter_fullres`` spans a theoretical 65 µm spot (not the 55 µm capture area)
SPACERANGER_SPOT_DIAMETER_UM = 65.0

TECHNOLOGIES = {t.name: t for t in (ST, VISIUM)}
