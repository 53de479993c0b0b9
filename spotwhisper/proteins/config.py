"""Settings of the protein stage (``configs/proteins.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ExpressionRouteConfig:
    """Route B: marker levels from log1p expression through the curated gene map."""

    layer: str | None = None  #: expression layer; None = ``layers["log1p"]`` if present, else ``X``
    scaling: Literal["minmax", "rank", "none"] = "minmax"  #: how raw levels become comparable in [0, 1]
    clip_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])  #: robust min–max bounds (%)
    groupby: str | None = "section"  #: obs column: scale each slide on its own; None = all spots together
    min_overlap: float = 0.5  #: least fraction of proxy markers with ≥ 1 gene in the data, else refuse
    integer_check_values: int = 10000  #: non-zero values inspected to tell raw counts from log1p data


@dataclass
class RosieConfig:
    """Route A: the ROSIE ConvNeXt-Small applied by sliding window."""

    mpp: float = 0.3775  #: µm per pixel of ROSIE's training images (see the module docs of rosie.py)
    window_px: int = 128  #: window side in ROSIE pixels
    input_px: int = 224  #: the window is resized to this before the network
    centre_px: int = 8  #: training target: mean of the centre centre_px × centre_px pixels
    stride_px: int = 64  #: distance between window centres, in ROSIE pixels
    chunk_windows: int = 8  #: windows per side read from the slide in one region read
    batch_size: int = 16  #: windows per forward pass
    max_map_mb: float = 2048.0  #: refuse marker maps larger than this in memory (raise the stride instead)
    background_threshold: float = 220.0  #: windows with mean RGB above this are glass → NaN
    spot_reduce: Literal["centre", "disk"] = "disk"  #: per-spot value: nearest map cell, or mean over the spot disk
    scaling: Literal["minmax", "rank", "none"] = "minmax"  #: raw outputs → obsm["proteins"], per slide
    clip_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])  #: robust min–max bounds (%)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  #: input normalisation (ImageNet)
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class RosieTrainConfig:
    """Training ROSIE on paired H&E + multiplex images (masked MSE)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4  #: AdamW learning rate
    weight_decay: float = 0.05
    windows_per_image: int = 512  #: random window centres drawn per image and epoch
    seed: int = 0


@dataclass
class ProteinQCConfig:
    """Per-marker QC (ROSIE): dynamic range and Wasserstein distance to a reference."""

    percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])  #: dynamic range = upper − lower percentile
    min_dynamic_range: float = 0.25  #: below this (raw units: log1p for route B) a marker is flat on the slide
    min_detected_fraction: float = 0.05  #: route B: fewer spots with any signal than this → not informative
    max_wasserstein: float = 0.5  #: above this (raw units) the slide's distribution is far from the reference


@dataclass
class ExportConfig:
    """OME-TIFF export of the panel: on the H&E pixel grid (default) or at the spot grid."""

    fill_value: float = float("nan")  #: pixels without a spot, and markers without a proxy
    compression: str | None = "zlib"
    grid: Literal["image", "spots"] = "image"  #: "image" = the H&E's pixel grid, downsampled; "spots" = 1 px per spot
    max_side: int = 1024  #: image grid: the H&E is downsampled by a power of 2 until its longer side fits
    footprint: Literal["tile", "spot"] = "tile"  #: value painted over the spot's tile (side = spot spacing) or its disk
    tile_px: int = 256  #: TIFF tile side of the pyramid levels
    min_level_px: int = 128  #: pyramid levels are halved until the longer side is below this


@dataclass
class ProteinsConfig:
    """Everything the protein stage needs."""

    expression: ExpressionRouteConfig = field(default_factory=ExpressionRouteConfig)
    rosie: RosieConfig = field(default_factory=RosieConfig)
    train: RosieTrainConfig = field(default_factory=RosieTrainConfig)
    qc: ProteinQCConfig = field(default_factory=ProteinQCConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
