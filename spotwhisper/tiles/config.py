"""Tile settings (``configs/tiles.yaml``). Sizes are in µm so slides at any resolution agree."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpotTileConfig:
    """DeepSpot layout around each spot: the spot tile, its sub-tiles and its neighbours."""

    tile_um: float | None = None  #: side of the spot tile (µm); None = the spot centre spacing
    subtile_grid: int = 3  #: the spot tile is cut into grid × grid sub-tiles
    neighbours: int = 6  #: number of nearest spots forming the ring
    neighbour_radius: float = 1.6  #: ring radius limit, in ring pitches
    neighbour_min: float = 0.75  #: ring spots are at least this many ring pitches away (closer spots overlap the tile)
    ring_pitch_um: float | None = None  #: the pitch (µm) the ring is measured in; None = the slide's spot spacing

    @property
    def follows_slide(self) -> bool:
        """True when tiles and ring take the slide's own spot spacing (not a model's trained geometry)."""
        return self.tile_um is None and self.ring_pitch_um is None


@dataclass
class GridTileConfig:
    """Regular grid for slides without spots."""

    tile_um: float = 200.0  #: side of a grid tile (µm)
    overlap: float = 0.0  #: fraction of the side shared by neighbouring tiles, in [0, 0.9]


@dataclass
class TissueConfig:
    """Tissue detection on a thumbnail: Otsu threshold on HSV saturation, dark pixels excluded."""

    thumbnail_max_side: int = 2048  #: thumbnail size (px) the mask is computed on
    min_saturation: float = 0.05  #: floor for the Otsu threshold (saturation in [0, 1])
    dark_value: float = 0.15  #: pixels darker than this (HSV value in [0, 1]) are background (black exports)
    min_object_fraction: float = 0.0005  #: tissue pieces smaller than this fraction of the slide are dropped
    min_slide_fraction: float = 0.002  #: below this tissue fraction the slide counts as having no tissue


@dataclass
class QCConfig:
    """Per-tile quality control."""

    min_tissue_fraction: float = 0.25  #: grid tiles with less tissue are skipped; spots get a flag
    min_blur_variance: float = 15.0  #: variance of the Laplacian (grey levels²) below which a tile is blurred


@dataclass
class StainConfig:
    """Macenko stain normalisation (optional)."""

    normalize: bool = False
    io: float = 240.0  #: transmitted light intensity
    alpha: float = 1.0  #: percentile for robust stain angle extremes
    beta: float = 0.15  #: optical density below which pixels are treated as background
    reference_he: list[list[float]] = field(
        default_factory=lambda: [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]]
    )  #: reference stain vectors (RGB OD, columns H and E), Macenko et al. 2009
    reference_max_c: list[float] = field(default_factory=lambda: [1.9705, 1.0308])
    #: also rescale each stain's concentrations so the slide's 99th percentile meets ``reference_max_c``
    #: (Macenko's recipe); False keeps the slide's own densities and swaps only the stain colours
    scale_concentrations: bool = True


@dataclass
class AugmentConfig:
    """Extra copies of every training section, as another lab or scanner would give them
    (:mod:`spotwhisper.tiles.views`); each copy's features train the image heads beside the original's."""

    hed_copies: int = 0  #: copies with a random per-slide HED stain shift each
    hed_sigma: float = 0.05  #: HED shift: densities scaled by 1 ± U(σ) per channel …
    hed_bias: float = 0.01  #: … and shifted by ± U(bias) (scikit-image HED units; 0.01 ≈ 0.14 optical density)
    mpp: list[float] = field(default_factory=list)  #: copies resampled to these µm/px (coarser than the slide)
    macenko_targets: list[str] = field(default_factory=list)  #: her2st sections whose stain vectors a copy takes
    seed: int = 0

    @property
    def n_copies(self) -> int:
        """Copies per section besides the original."""
        return self.hed_copies + len(self.mpp) + len(self.macenko_targets)


@dataclass
class ReadConfig:
    """How tiles are read from a slide (:mod:`spotwhisper.tiles.blocks`)."""

    block_tiles: float = 3.0  #: tiles are read in blocks this many tile sides across, overlapping tiles' pixels once (0 = one by one)
    workers: int = 2  #: threads reading and cutting blocks while the model runs


@dataclass
class TileConfig:
    """Everything the tiles stage needs."""

    spot: SpotTileConfig = field(default_factory=SpotTileConfig)
    grid: GridTileConfig = field(default_factory=GridTileConfig)
    tissue: TissueConfig = field(default_factory=TissueConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    stain: StainConfig = field(default_factory=StainConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    batch_size: int = 32  #: tiles per streamed batch
