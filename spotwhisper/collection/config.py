"""Settings of collection builds, whatever the engine (``configs/collection.yaml``): where slides are
staged, what their staging key hashes, how many slides one index commit reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import load_config


@dataclass
class CollectionConfig:
    """Staging and commit of ``spotwhisper index build`` (local and Ray engines)."""

    staging_dir: str | None = None  #: per-slide outputs; None = <index_dir>/.staging
    keep_staging: bool = False  #: keep staged slides after a successful commit
    commit_batch_slides: int = 256  #: slides read into the driver per index step
    key_configs: list[str] = field(default_factory=list)  #: configs hashed into a staged slide's key
    watch_interval_s: float = 1.0  #: readers that follow a collection (serve) check its manifest at most this often

    def __post_init__(self) -> None:
        if self.commit_batch_slides < 1:
            raise ValueError(f"configs/collection.yaml: commit_batch_slides must be >= 1, got {self.commit_batch_slides}")


def load_collection_config(path: str | None = "collection", **overrides) -> CollectionConfig:
    """Read :class:`CollectionConfig` from ``configs/collection.yaml`` (or ``path``); ``overrides`` (not None) win."""
    return load_config(CollectionConfig, path, **overrides)
