"""Settings of the Ray batch engine (``configs/scale.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import load_config


@dataclass
class ScaleConfig:
    """How ``spotwhisper index build --engine ray`` runs: cluster and actors (staging and commit:
    :class:`spotwhisper.collection.config.CollectionConfig`)."""

    address: str | None = None  #: Ray cluster to join; None = $RAY_ADDRESS, else start a local instance
    num_cpus: int = 2  #: CPUs of a local instance started here
    object_store_gb: float | None = None  #: object store of a local instance (GB); None = Ray default
    actors: int | None = None  #: slide-processing actors; None = cluster CPUs / cpus_per_actor
    cpus_per_actor: float = 1.0  #: Ray CPU reservation per actor
    gpus_per_actor: float = 0.0  #: Ray GPU reservation per actor (1 = one actor per GPU)
    memory_per_actor_gb: float = 4.0  #: Ray memory reservation per actor (GB)
    torch_threads: int = 1  #: torch intra-op threads inside each actor
    batch_size: int = 1  #: slides per map_batches call
    ray_progress_bars: bool = False  #: show Ray Data's own progress bars
    forward_env: list[str] = field(default_factory=list)  #: environment variables passed to the actors

    def __post_init__(self) -> None:
        for name in ("num_cpus", "torch_threads", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"configs/scale.yaml: {name} must be >= 1, got {getattr(self, name)}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"configs/scale.yaml: actors must be >= 1 or null, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0 or self.memory_per_actor_gb <= 0:
            raise ValueError("configs/scale.yaml: cpus_per_actor and memory_per_actor_gb must be > 0, gpus_per_actor >= 0")


def load_scale_config(path: str | None = "scale", **overrides) -> ScaleConfig:
    """Read :class:`ScaleConfig` from ``configs/scale.yaml`` (or ``path``); ``overrides`` (not None) win."""
    return load_config(ScaleConfig, path, **overrides)
