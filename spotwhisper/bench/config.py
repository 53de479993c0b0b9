"""Settings of the zero-shot benchmark harness (``configs/bench/harness.yaml``) and of its tasks
(``configs/bench/<task>.yaml``, format documented in :mod:`spotwhisper.bench.tasks`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..routes import canonical_route

#: every route the harness knows, in table order (see :mod:`spotwhisper.bench.scorers`)
ALL_ROUTES = (
    "measured",
    "measured_heldout",
    "measured_para1",
    "measured_para2",
    "measured_para3",
    "transcriptome",
    "transcriptome_heldout",
    "image",
    "plip",
    "conch",
    "protein",
    "fused",
    "marker",
    "marker_inferred",
    "chance",
)


@dataclass
class ClassSpec:
    """One class of a task: what spots belong to it and the text query that should find them."""

    name: str  #: class name as reported
    query: str | None = None  #: text query (default: ``name``); a vocabulary term brings its synonyms/genes/proteins
    synonyms: list[str] | None = None  #: prompt-ensembling synonyms (None = the vocabulary term's)
    genes: list[str] | None = None  #: marker genes for the marker baseline (None = the vocabulary term's)
    proteins: list[str] | None = None  #: marker proteins for the protein route (None = the vocabulary term's)
    match: list[str] | None = None  #: label values or glob patterns (case-insensitive) of this class; None = [name]
    concept: str | None = None  #: held-out concept of ``configs/bench/concepts.yaml`` (zero-shot and paraphrase routes)


@dataclass
class LabelSpec:
    """Where spot labels come from."""

    source: Literal["obs", "deconv_dominant"] = "obs"
    key: str = "label"  #: obs column holding the labels (``source: obs``)
    #: ``source: deconv_dominant``: group → cell types; a spot's label is the group with the largest
    #: summed proportion in ``obs["deconv_<type>"]`` (first group listed wins ties)
    groups: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)  #: label values / glob patterns left out of the evaluation


@dataclass
class ScopeSpec:
    """A set of samples on which routes are compared side by side (the same spots for every route)."""

    name: str
    sections: list[str] | None = None  #: sample names (None = every sample loaded)
    routes: list[str] | None = None  #: routes compared here (None = the harness's routes)

    def __post_init__(self) -> None:
        self.routes = None if self.routes is None else [canonical_route(r) for r in self.routes]


@dataclass
class TaskConfig:
    """One benchmark task (``configs/bench/<name>.yaml``)."""

    name: str
    classes: list[ClassSpec]
    description: str = ""
    labels: LabelSpec = field(default_factory=LabelSpec)
    sections: list[str] | None = None  #: her2st sections loaded (None = every section); ignored for .h5ad input
    sample_key: str = "section"  #: obs column splitting .h5ad input into samples (absent = one sample per file)
    patient_key: str = "patient"  #: obs column naming the patient (her2st: leakage-safe text model choice)
    min_class_spots: int = 1  #: a class is scored in a sample only with at least this many spots there
    scopes: list[ScopeSpec] = field(default_factory=lambda: [ScopeSpec(name="all samples")])


@dataclass
class BenchConfig:
    """Harness settings shared by every task."""

    routes: list[str] = field(default_factory=lambda: list(ALL_ROUTES))  #: default routes, table order
    score: Literal["probability", "similarity"] = "probability"  #: text routes: softmax over the class queries, or cosine
    marker_mode: Literal["log1p", "zscore"] = "zscore"  #: marker-gene baseline (see language.baselines)
    text_config: str = "text"  #: config of the leave-one-patient-out text models
    expression_config: str = "expression"  #: config of the out-of-fold inferred expression
    search_config: str = "search"  #: fused route: its ``weights`` and ``calibration`` (must exist)
    bootstrap: int = 1000  #: bootstrap replicates over spots for the confidence intervals (0 = none)
    ci: float = 0.95  #: confidence level of the bootstrap intervals
    seed: int = 0  #: bootstrap and chance-score seed
    threads: int = 1  #: torch CPU threads
    image_batch_size: int = 32  #: tiles per forward pass of PLIP / CONCH
    out: str = "zero_shot"  #: output prefix <out>_<task>.{md,json,png}; relative = under <user data>/results

    def __post_init__(self) -> None:
        self.routes = [canonical_route(r) for r in self.routes]  # older names (inferred, aligned …) still work


@dataclass
class ConceptSpec:
    """A concept the zero-shot routes hold out of text-model training (``configs/bench/concepts.yaml``)."""

    patterns: list[str]  #: regular expressions (case-insensitive) naming the concept or a synonym
    paraphrases: list[str] = field(default_factory=list)  #: wordings no training caption contains


@dataclass
class ConceptsConfig:
    """Every held-out concept by name."""

    concepts: dict[str, ConceptSpec] = field(default_factory=dict)
