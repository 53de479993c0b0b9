"""Folder-level steps of writing a collection: training templates, writing shards, committing.

Callers hold the collection's exclusive lock (or write into a private temporary folder).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..routes import canonical_route
from ..names import check_name
from .config import IndexConfig
from .factory import (
    bytes_per_vector,
    choose_factory,
    is_lossy,
    new_index,
    train_index,
    training_sample,
)
from .manifest import Manifest, RouteInfo, RouteModel, now_iso, write_manifest
from .metadata import ID, SlideData
from .shards import SHARDS, build_shard
from .vectors import as_unit_vectors

log = logging.getLogger(__name__)

TEMPLATES = "templates"


def validated(
    slides: Sequence[SlideData], models: Mapping[str, RouteModel], known: Sequence[str] = ()
) -> list[SlideData]:
    """Slides with unit float32 vectors for every route; refuses duplicates, missing routes, wrong dims."""
    seen = set(known)
    out = []
    for s in slides:
        check_name(s.slide, "slide")
        if s.slide in seen:
            raise ValueError(f"slide {s.slide!r} is already in the collection (remove it first) or given twice")
        seen.add(s.slide)
        given = {canonical_route(r): v for r, v in s.vectors.items()}  # older route names (text …) too
        missing = sorted(set(models) - set(given))
        if missing:
            raise KeyError(f"slide {s.slide!r} has no vectors for route(s) {missing} (has {sorted(s.vectors)})")
        vectors = {
            r: as_unit_vectors(given[r], m.dim, f"slide {s.slide!r}, route {r!r} ({m})") for r, m in models.items()
        }
        out.append(SlideData(s.slide, s.metadata, vectors))
    return out


def next_shard_id(manifest: Manifest) -> str:
    """Hand out the next shard id (``s000001`` …); ids are never reused."""
    manifest.next_shard += 1
    return f"s{manifest.next_shard:06d}"


def fill(
    folder: Path,
    manifest: Manifest,
    slides: list[SlideData],
    models: Mapping[str, RouteModel],
    cfg: IndexConfig,
    factory: str | Mapping[str, str] | None,
    train_vectors: Mapping[str, np.ndarray] | None,
    expected_vectors: int | None,
) -> None:
    """Choose, train and write each route's template into ``folder``, then add ``slides`` as shards."""
    n_total = sum(len(s) for s in slides)
    gen = manifest.generation + 1
    for route, model in models.items():
        if isinstance(factory, str):
            fac = factory
        elif factory and route in factory:
            fac = factory[route]
        else:
            fac = choose_factory(expected_vectors or n_total, model.dim, cfg.factory)
        pool = train_vectors.get(route) if train_vectors else None
        if pool is not None:
            pool = as_unit_vectors(pool, model.dim, f"training vectors of route {route!r}")
        elif slides and not new_index(fac, model.dim).is_trained:  # only IVF/PQ need a training pool
            pool = np.vstack([s.vectors[route] for s in slides])
        else:
            pool = np.zeros((0, model.dim), np.float32)
        t0 = time.perf_counter()
        sample = training_sample(pool, fac, model.dim, cfg.factory, cfg.seed)
        template = train_index(fac, model.dim, sample, seed=cfg.seed, gpu=cfg.gpu)
        info = RouteInfo(model=model.name, dim=model.dim, factory=fac, model_version=model.version)
        info.n_train, info.train_seconds = len(sample), round(time.perf_counter() - t0, 3)
        info.lossy = is_lossy(template)
        info.stored_vectors = cfg.store_vectors == "always" or (cfg.store_vectors == "lossy" and info.lossy)
        info.bytes_per_vector = bytes_per_vector(template)
        if len(sample):
            (folder / TEMPLATES).mkdir(exist_ok=True)
            info.template = f"{TEMPLATES}/{route}-g{gen}.faiss"
            faiss.write_index(template, str(folder / info.template))
        manifest.routes[route] = info
    add_shards(folder, manifest, slides, cfg)


def add_shards(folder: Path, manifest: Manifest, slides: list[SlideData], cfg: IndexConfig) -> None:
    """Group ``slides`` into shards of at most ``cfg.shards.max_vectors`` vectors and write them."""
    groups: list[list[SlideData]] = []
    for s in slides:
        if not groups or sum(len(x) for x in groups[-1]) + len(s) > cfg.shards.max_vectors:
            groups.append([])
        groups[-1].append(s)
    for group in groups:
        meta = pd.concat([s.metadata for s in group], ignore_index=True)
        n = len(meta)
        meta[ID] = np.arange(manifest.next_id, manifest.next_id + n, dtype=np.int64)
        meta = meta[[ID] + [c for c in meta.columns if c != ID]]
        vectors = {r: np.vstack([s.vectors[r] for s in group]) for r in manifest.routes}
        manifest.shards.append(build_shard(folder, next_shard_id(manifest), meta, vectors, manifest.routes))
        manifest.next_id += n
        for info in manifest.routes.values():
            info.n_vectors += n
    for route, info in manifest.routes.items():
        suggested = choose_factory(info.n_vectors, info.dim, cfg.factory)
        now, later = rule_rank(info.factory, cfg), rule_rank(suggested, cfg)
        if now is not None and suggested is not None and later > now:
            log.warning(
                "collection %r, route %r: %d vectors in a %s index; configs/index.yaml suggests %s — "
                "rebuild with --overwrite when convenient",
                manifest.collection,
                route,
                info.n_vectors,
                info.factory,
                suggested,
            )


def family(factory: str) -> str:
    """``factory`` without its numbers (``"IVF1024,Flat"`` → ``"IVF,Flat"``)."""
    return re.sub(r"\d+", "", factory)


def rule_rank(factory: str, cfg: IndexConfig) -> int | None:
    """Position of the config rule producing ``factory``'s family (digits ignored); None for custom strings."""
    families = [family(r.factory.format(nlist=1, pq_m=1)) for r in cfg.factory.rules]
    fam = family(factory)
    return families.index(fam) if fam in families else None


def commit(folder: Path, manifest: Manifest) -> None:
    """Bump the generation, replace the manifest atomically, then delete files it no longer lists."""
    manifest.generation += 1
    manifest.updated = now_iso()
    write_manifest(folder, manifest)
    collect_garbage(folder, manifest)


def collect_garbage(folder: Path, manifest: Manifest) -> None:
    """Delete shard folders and templates ``manifest`` does not list (left by replaced data or a crashed writer).

    Call only under the exclusive lock: the manifest is then the only truth.
    """
    keep = {s.id for s in manifest.shards}
    for path in (folder / SHARDS).glob("*") if (folder / SHARDS).is_dir() else []:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    templates = {Path(r.template).name for r in manifest.routes.values() if r.template}
    for path in (folder / TEMPLATES).glob("*") if (folder / TEMPLATES).is_dir() else []:
        if path.name not in templates:
            path.unlink(missing_ok=True)
