"""The manifest of a collection (``manifest.json``): models, factory strings, shards, versions.

The manifest is the single source of truth of a collection folder: readers load only the
shards it lists, and writers replace it atomically (temporary file + ``os.replace``) after
every new file is in place, so a crash leaves either the old or the new collection.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss

from .. import __version__
from ..atomic import atomic_file
from ..config import ConfigError, from_dict, to_dict
from ..routes import canonical_route
from .errors import IndexFormatError, ModelMismatchError, UnknownRouteError

FORMAT = "spotwhisper-index/1"
MANIFEST = "manifest.json"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class RouteModel:
    """Identity of the model that made a route's vectors: name, weights version/hash, dimension."""

    name: str
    dim: int
    version: str | None = None  #: weights hash or release tag; None = not checked

    def __str__(self) -> str:
        return f"{self.name}@{self.version or '?'} ({self.dim}-d)"


@dataclass
class RouteInfo:
    """One route's index as recorded in the manifest."""

    model: str
    dim: int
    factory: str  #: faiss factory string (inner product)
    model_version: str | None = None
    metric: str = "inner_product"
    n_vectors: int = 0
    template: str | None = None  #: trained empty index every shard starts from (IVF/PQ), relative path
    n_train: int = 0  #: vectors the template was trained on
    train_seconds: float = 0.0
    lossy: bool = False  #: codes only approximate the vectors (PQ/SQ)
    stored_vectors: bool = False  #: shards keep float32 copies (``<route>.vectors.npy``)
    bytes_per_vector: float = 0.0  #: estimated RAM per vector (code + id + links)
    #: name of the route's files in the shards (``<file>.faiss``); None = the route's name. Collections
    #: written before the one route vocabulary (:mod:`spotwhisper.routes`) keep their old file names.
    file: str | None = None

    @property
    def identity(self) -> RouteModel:
        return RouteModel(self.model, self.dim, self.model_version)


@dataclass
class ShardInfo:
    """One shard: a folder ``shards/<id>/`` holding the vectors of whole slides."""

    id: str
    slides: list[str]
    n_vectors: int
    created: str = ""


@dataclass
class Manifest:
    """Contents of ``manifest.json``."""

    collection: str
    format: str = FORMAT
    spotwhisper_version: str = __version__
    faiss_version: str = faiss.__version__
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    generation: int = 0  #: incremented by every committed change
    next_id: int = 0  #: next vector id to hand out (ids are never reused)
    next_shard: int = 0
    routes: dict[str, RouteInfo] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)

    def slides(self) -> list[str]:
        """Slides in the collection, in shard order."""
        return [s for shard in self.shards for s in shard.slides]

    def shard_of(self, slide: str) -> ShardInfo | None:
        """The shard holding ``slide``, or None."""
        return next((sh for sh in self.shards if slide in sh.slides), None)

    def file_names(self) -> dict[str, str]:
        """route → name of its shard files (``shards/<id>/<name>.faiss``)."""
        return {r: info.file or r for r, info in self.routes.items()}

    def route(self, name: str) -> RouteInfo:
        """The route ``name`` (an older name, e.g. ``text``, is read as its route); :class:`UnknownRouteError`
        lists the known routes."""
        name = canonical_route(name)
        if name not in self.routes:
            raise UnknownRouteError(
                f"collection {self.collection!r} has no route {name!r} (routes: {sorted(self.routes)})"
            )
        return self.routes[name]

    def check_models(self, models: dict[str, RouteModel]) -> None:
        """Raise :class:`ModelMismatchError` unless every given route was built with that model.

        Names and dimensions must agree; versions only when both sides record one.
        """
        for name, model in models.items():
            info = self.route(name)
            built = info.identity
            same = built.name == model.name and built.dim == model.dim
            if same and built.version and model.version:
                same = built.version == model.version
            if not same:
                raise ModelMismatchError(
                    f"collection {self.collection!r}, route {name!r}: the index was built with {built}, "
                    f"but the loaded model is {model}. Rebuild the index "
                    f"(spotwhisper index build --collection {self.collection} --overwrite …) "
                    "or load the model it was built with."
                )


def read_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json``; :class:`IndexFormatError` when missing, corrupt or of another format."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{folder}: not a collection (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise IndexFormatError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise IndexFormatError(f"{path}: format {found!r}, expected {FORMAT!r}")
    if isinstance(data.get("routes"), dict):
        data["routes"] = _current_route_names(data["routes"])
    try:
        return from_dict(Manifest, data, where=str(path))
    except ConfigError as err:
        raise IndexFormatError(str(err)) from err


def _current_route_names(routes: dict) -> dict:
    """Routes of a manifest under their names in the one vocabulary: a collection written with the
    older names (``text``, ``image_text_aligned`` …) opens as it is; its files keep their names
    (``file``), so nothing on disk moves."""
    out = {}
    for old, info in routes.items():
        name = canonical_route(old)
        if name != old and isinstance(info, dict):
            info = {**info, "file": info.get("file") or old}
        out[name] = info
    return out


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest`` atomically into ``folder`` (temporary file, fsync, ``os.replace``)."""
    path = Path(folder) / MANIFEST
    with atomic_file(path, fsync=True) as tmp:
        tmp.write_text(json.dumps(to_dict(manifest), indent=2) + "\n")
    return path


def weights_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """``"sha256:<first 16 hex>"`` of a weights file, or of every file in a folder (sorted by name)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such weights file or folder")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    digest = hashlib.sha256()
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"
