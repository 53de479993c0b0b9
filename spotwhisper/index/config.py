"""Index settings (``configs/index.yaml``) and where collections live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .. import keys
from ..config import load_config
from ..routes import TRANSCRIPTOME, canonical_route
from ..userdata import user_data_dir

#: Environment variable naming the folder that holds collections.
INDEX_DIR_ENV = "SPOTWHISPER_INDEX_DIR"


def default_index_dir() -> Path:
    """Default folder for collections: ``<user data folder>/indexes`` (:mod:`spotwhisper.userdata`;
    ``~/.local/share/spotwhisper/indexes`` unless ``$SPOTWHISPER_HOME`` / ``$XDG_DATA_HOME`` say otherwise),
    the same from a checkout and from an installed wheel."""
    return user_data_dir("indexes")


@dataclass
class FactoryRule:
    """Use ``factory`` while a route holds fewer than ``max_vectors`` vectors (None = no limit)."""

    max_vectors: int | None
    factory: str


def _default_rules() -> list[FactoryRule]:
    return [
        FactoryRule(50_000, "Flat"),
        FactoryRule(2_000_000, "IVF{nlist},Flat"),
        FactoryRule(None, "IVF{nlist}_HNSW32,PQ{pq_m}"),
    ]


@dataclass
class FactoryConfig:
    """How a faiss factory string is chosen and trained for a route of ``n`` vectors."""

    rules: list[FactoryRule] = field(default_factory=_default_rules)
    nlist_per_sqrt_n: float = 1.0  #: nlist = power of two nearest to this × sqrt(n)
    min_nlist: int = 64
    max_nlist: int = 65536
    pq_dims_per_byte: int = 8  #: PQ{m} with m = dim / this
    train_per_list: int = 64  #: training sample = this × nlist vectors
    max_train: int = 500_000  #: cap of the training sample (vectors)


@dataclass
class IndexSearchConfig:
    """Search-time parameters."""

    nprobe: int = 32  #: inverted lists visited per query (IVF)
    ef_search: int = 128  #: HNSW search depth
    max_k: int = 10_000  #: largest k a search may ask for
    rerank: int = 4  #: lossy routes with float32 copies: re-score rerank × k candidates exactly (1 = off)


@dataclass
class ShardConfig:
    """Slides are grouped into shards of at most ``max_vectors`` vectors."""

    max_vectors: int = 1_000_000


@dataclass
class IndexConfig:
    """Everything the index layer reads from ``configs/index.yaml``."""

    index_dir: Path | None = None  #: None = ``$SPOTWHISPER_INDEX_DIR`` or :func:`default_index_dir`
    factory: FactoryConfig = field(default_factory=FactoryConfig)
    search: IndexSearchConfig = field(default_factory=IndexSearchConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    store_vectors: Literal["never", "lossy", "always"] = "lossy"  #: float32 copies beside the index
    metadata_columns: list[str] = field(default_factory=lambda: ["patient", "label", "cluster", "cluster_annotation"])
    routes: dict[str, str] = field(default_factory=lambda: {TRANSCRIPTOME: keys.TEXT_EMB})  #: route -> obsm key
    gpu: Literal["auto", "off"] = "auto"
    lock_timeout: float = 120.0  #: seconds to wait for a collection lock
    seed: int = 0

    def __post_init__(self) -> None:
        # route names of the one vocabulary (spotwhisper.routes); an older config's ``text:`` … still works
        self.routes = {canonical_route(r): k for r, k in self.routes.items()}


def load_index_config(path: str | Path | None = "index", **overrides) -> IndexConfig:
    """Read :class:`IndexConfig` from ``configs/index.yaml`` (or ``path``); ``None`` = defaults."""
    return load_config(IndexConfig, path, **overrides)


def resolve_index_dir(index_dir: str | Path | None = None, cfg: IndexConfig | None = None) -> Path:
    """The collections folder: ``index_dir``, else ``$SPOTWHISPER_INDEX_DIR``, else the config, else
    :func:`default_index_dir` (``<user data folder>/indexes``)."""
    if index_dir is not None:
        return Path(index_dir).expanduser()
    env = os.environ.get(INDEX_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if cfg is not None and cfg.index_dir is not None:
        return Path(cfg.index_dir).expanduser()
    return default_index_dir()
