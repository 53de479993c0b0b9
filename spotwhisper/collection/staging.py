"""Per-slide staged outputs: what makes a batch job resumable.

Every slide a job processes is written, atomically, to
``<staging>/<collection>/<slide>.<key>.h5ad`` before anything is indexed. The key is a hash of the
slide's identity (section id and data folder, or file path + content fingerprint), ``mpp``, the
pipeline models' weights and the configs that change the output (``key_configs`` in
``configs/collection.yaml``). A rerun finds the files of finished slides and skips them; a change of
model or config gives new keys, so stale outputs are never reused. Nothing here imports Ray: any
engine (Ray actors, one process) can stage slides with :func:`stage_slide`.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
from anndata.io import read_elem

from .. import __version__, keys
from ..config import resolve_config_path
from ..datadir import resolve_data_dir
from ..encoders.feature_cache import file_fingerprint
from ..index import load_index_config, resolve_index_dir, weights_fingerprint
from ..io import write_h5ad
from ..io.her2st import list_sections
from ..io.inputs import IMAGE_SUFFIXES, SECTION_RE, load_input
from ..names import check_name, safe_name
from ..pipeline import Models, PipelineConfig, process_slide
from .config import CollectionConfig

STAGING = ".staging"

#: ``StagedSlide.status`` values
PENDING, REUSED, PROCESSED, FAILED = "pending", "reused", "processed", "failed"


@dataclass
class StagedSlide:
    """One slide of a job: its spec, staged file and what happened to it (``status``)."""

    spec: str  #: what the user named: section id, .h5ad or image path
    label: str  #: file-name-safe name derived from the spec (the slide id comes from the output)
    path: Path  #: staged .h5ad
    status: str = PENDING  #: pending | reused | processed | failed
    n_spots: int = 0
    seconds: float = 0.0  #: wall time of the pipeline on this slide (0 when reused)
    error: str = ""
    worker: str = ""  #: host:pid of the process that ran it
    peak_rss_mb: float = 0.0  #: peak resident memory of that process so far (MB)


def staging_folder(collection: str, index_dir: str | Path | None, cfg: CollectionConfig) -> Path:
    """``<staging_dir>/<collection>`` (absolute); the default staging dir is ``<index_dir>/.staging``."""
    if cfg.staging_dir:
        return Path(cfg.staging_dir).expanduser().resolve() / collection
    return resolve_index_dir(index_dir, load_index_config()).resolve() / STAGING / collection


def _model_dirs(pipeline: PipelineConfig) -> dict[str, str | None]:
    from ..expression.pretrained import DEFAULT_MODEL_DIR as EXPRESSION_DIR
    from ..imagetext.aligned import DEFAULT_DIR as ALIGNED_DIR
    from ..language import DEFAULT_MODEL_DIR as TEXT_DIR

    return {"expression": pipeline.expression_model or str(EXPRESSION_DIR),
            "text": pipeline.text_model or str(TEXT_DIR),
            "aligned": pipeline.aligned_model or str(ALIGNED_DIR)}


def model_fingerprint(pipeline: PipelineConfig, cfg: CollectionConfig) -> str:
    """Hash of everything model-side that changes a slide's output: weights folders, settings,
    the ``key_configs`` files and the SpotWhisper version (16 hex chars)."""
    h = hashlib.sha256(json.dumps({"version": __version__, "pipeline": pipeline.__dict__}, sort_keys=True,
                                  default=str).encode())
    for role, where in _model_dirs(pipeline).items():
        path = Path(where) if where else None
        h.update(f"{role}={weights_fingerprint(path) if path is not None and path.exists() else where}".encode())
    for name in cfg.key_configs:
        h.update(resolve_config_path(name).read_bytes())
    return h.hexdigest()[:16]


def spec_identity(spec: str, data_dir: str | Path | None) -> str:
    """What a spec points at: ``her2st:<data dir>:<section>`` or ``file:<path>:<content fingerprint>``.

    Checks what can be checked without processing: a her2st section exists in the data folder; a
    file exists, is an ``.h5ad`` or an image, and an ``.h5ad``'s ``obs["section"]`` names are valid.
    """
    path = Path(spec)
    if SECTION_RE.match(spec) and not path.exists():
        known = list_sections(data_dir)
        if spec not in known:
            raise FileNotFoundError(f"{spec}: no such her2st section in {resolve_data_dir(data_dir)} "
                                    f"(sections: {', '.join(known) or 'none'}), and no file of that name")
        return f"her2st:{resolve_data_dir(data_dir).resolve()}:{spec}"
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such file (and not a her2st section id like C2)")
    suffix = path.suffix.lower()
    if suffix != ".h5ad" and suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{spec}: not a her2st section id, an .h5ad or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if suffix == ".h5ad":
        for name in _h5ad_sections(path):
            check_name(name, f"slide (obs['section'] of {path.name})")
    return f"file:{path.resolve()}:{file_fingerprint(path)}"


def _h5ad_sections(path: Path) -> list[str]:
    """The ``obs["section"]`` values of an ``.h5ad`` (read from the file without loading it; [] when absent)."""
    try:
        with h5py.File(path, "r") as f:
            if keys.SECTION not in f["obs"]:
                return []
            values = read_elem(f["obs"][keys.SECTION])
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a readable .h5ad ({err})") from err
    return sorted({str(v) for v in getattr(values, "categories", values)})


def slide_name(adata: ad.AnnData) -> str:
    """The slide id of a processed AnnData (its single ``obs["section"]`` value, a valid name)."""
    names = adata.obs[keys.SECTION].astype(str).unique()
    if len(names) != 1:
        raise ValueError(f"expected one slide per AnnData, found sections {list(names)}")
    return check_name(str(names[0]), "slide")


def plan_staging(specs: list[str], folder: Path, data_dir: str | Path | None, mpp: float | None,
                 fingerprint: str) -> list[StagedSlide]:
    """One :class:`StagedSlide` per spec; those whose staged file exists are marked ``reused``."""
    out, seen = [], {}
    for spec in map(str, specs):
        identity = spec_identity(spec, data_dir)
        if identity in seen:
            raise ValueError(f"slide {spec!r} is given twice (also as {seen[identity]!r})")
        seen[identity] = spec
        key = hashlib.sha256(f"{identity}|mpp={mpp}|{fingerprint}".encode()).hexdigest()[:16]
        is_file = identity.startswith("file:")
        label = safe_name(Path(spec).stem if is_file else spec, 64, "slide")
        item = StagedSlide(str(Path(spec).resolve()) if is_file else spec, label, folder / f"{label}.{key}.h5ad")
        if item.path.is_file():
            item.status = REUSED
        out.append(item)
    return out


def stage_slide(item: StagedSlide, models: Models, pipeline: PipelineConfig | None, data_dir: str | Path | None,
                mpp: float | None, worker: str = "") -> StagedSlide:
    """Run the pipeline on ``item.spec`` and write its AnnData to ``item.path`` (atomically).

    Errors are caught and reported in the returned item (``status="failed"``, ``error``), so one bad
    slide does not stop the others; nothing is written for a failed slide.
    """
    start = time.perf_counter()
    try:
        out = process_slide(load_input(item.spec, data_dir, mpp=mpp), models, pipeline, progress=False)
        item.path.parent.mkdir(parents=True, exist_ok=True)
        write_h5ad(out, item.path)
        item.status, item.n_spots = PROCESSED, int(out.n_obs)
    except Exception as err:  # noqa: BLE001 - reported per slide, raised by the caller
        item.status, item.error = FAILED, f"{type(err).__name__}: {err}"
    item.seconds, item.worker = time.perf_counter() - start, worker
    item.peak_rss_mb = peak_rss_mb()
    return item


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)


def read_index_view(path: str | Path, obsm_keys: list[str] | None = None) -> ad.AnnData:
    """The parts of a staged slide that indexing needs: ``obs``, ``obsm`` (``obsm_keys`` + spatial;
    None = the configured index routes) and ``uns`` without images — no expression matrix."""
    wanted = set(obsm_keys if obsm_keys is not None else load_index_config().routes.values()) | {keys.SPATIAL}
    try:
        with h5py.File(path, "r") as f:
            obs = read_elem(f["obs"])
            obsm = {k: read_elem(f["obsm"][k]) for k in f["obsm"] if k in wanted}
            uns = {}
            for k in f["uns"]:
                if k == keys.SPATIAL:
                    uns[k] = {lib: {p: read_elem(g[p]) for p in g if p != "images"} for lib, g in f["uns"][k].items()}
                else:
                    uns[k] = read_elem(f["uns"][k])
    except (OSError, KeyError) as err:
        raise OSError(f"{path}: not a readable staged slide (.h5ad with obs/obsm/uns): {err}") from err
    return ad.AnnData(obs=obs, obsm=obsm, uns=uns)


class SlidesFailedError(RuntimeError, ValueError):
    """Some slides failed in the pipeline; nothing was indexed, finished slides stay staged.
    (A ``ValueError`` too, so the CLI reports it as a user error, not a traceback.)"""

    def __init__(self, failed: list[StagedSlide], total: int):
        self.failed = failed
        lines = "\n".join(f"  {it.spec}: {it.error}" for it in failed)
        super().__init__(f"{len(failed)} of {total} slides failed, so nothing was indexed; the others are staged "
                         f"and a rerun reuses them. Fix or leave out these slides and rerun:\n{lines}")


def staged_n_obs(path: str | Path) -> int:
    """Number of spots in a staged slide, read from its ``obs`` index without loading it."""
    with h5py.File(path, "r") as f:
        obs = f["obs"]
        return int(obs[obs.attrs["_index"]].shape[0])


def clear_staging(folder: Path) -> None:
    """Delete a collection's staging folder (after its index is committed)."""
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.name == STAGING and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
