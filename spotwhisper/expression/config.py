"""Settings of the H&E → expression model (``configs/expression.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..setmodel import NetConfig
from ..tiles.config import AugmentConfig


@dataclass
class TrainConfig:
    """Optimisation of each ensemble member."""

    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    feature_noise: float = 0.1  #: std of Gaussian noise added to standardised features (augmentation)
    ensemble: int = 3  #: members with different seeds; their spread is the epistemic variance
    seed: int = 0
    threads: int = 1  #: torch CPU threads (2 threads ran 10× slower on the busy 2-core machine)


@dataclass
class ExpressionConfig:
    """What to train on and how."""

    name: str = "expression-default"  #: model folder name: spotwhisper/pretrained/<name> shipped, <user data>/models/<name> from ``train expression`` without --out
    encoder: str = "efficientnet_lite0"  #: image encoder (spotwhisper.encoders registry)
    sections: list[str] = field(default_factory=lambda: ["C2", "C3", "C4", "C5", "C6"])  #: sections with H&E
    panel: str | None = None  #: gene panel file; None = spotwhisper/resources/gene_panel.txt
    min_panel_overlap: float = 0.9  #: refuse data holding less of the panel than this
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  #: stain / resolution copies of training sections
    top_variable: int = 50  #: "most variable genes" reported separately in evaluation
    top_k_retrieval: int = 20  #: k of the per-spot top-gene retrieval metric
