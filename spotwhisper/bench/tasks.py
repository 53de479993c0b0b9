"""Benchmark tasks: which spots belong to which class, the query of each class, and the samples.

A task lives in a YAML file (``configs/bench/regions.yaml``, ``celltypes.yaml``, ``clusters.yaml``
ship with the project). Bring your own labelled data in the same format::

    # my_task.yaml
    name: lung regions                  # used in file names and titles
    description: SpotWhisperer lung samples, pathologist regions
    labels:
      source: obs                       # obs: labels in an obs column; deconv_dominant: see celltypes.yaml
      key: region                       # the obs column (``--label-key`` overrides it)
      exclude: [undetermined, "unknown*"]   # label values / glob patterns left out
    sample_key: sample                  # obs column splitting a file into samples (absent: one sample per file)
    min_class_spots: 5                  # a class is scored in a sample only with at least 5 spots there
    classes:
      - name: tumour                    # reported class name
        query: invasive cancer          # text query; a term of configs/vocabulary.yaml brings its
                                        # synonyms, marker genes and marker proteins
        match: ["tumor*", "carcinoma"]  # label values (glob patterns, case-insensitive); default [name]
      - name: lymphocytes
        query: immune infiltrate
        synonyms: [lymphocytes, immune cells]   # replaces the vocabulary synonyms
        genes: [PTPRC, CD3E, MS4A1]              # marker-gene baseline (default: the vocabulary's)
        proteins: [CD45, CD3e]                   # protein route (default: the vocabulary's)
    scopes:                             # optional: sample sets compared side by side
      - {name: all samples}

and run ``spotwhisper bench zero-shot --h5ad a.h5ad b.h5ad --task-config my_task.yaml``.
Each ``.h5ad`` holds expression as raw counts in ``X`` or log1p(counts per 10k) in
``layers["log1p"]`` (a scaled ``X`` with ``.raw`` holding log1p values also works), gene symbols as
``var_names``, and — for the image routes — ``obsm["spatial"]`` with ``uns["spatial"][library]``
naming the source H&E image (as ``spotwhisper`` writes it). User data is scored with the shipped
models (they never saw it).
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .. import keys
from ..config import ConfigError, load_config
from ..prompts import Term, Vocabulary, load_vocabulary
from ..language.heldout import Concept
from .config import ClassSpec, ConceptsConfig, TaskConfig

log = logging.getLogger(__name__)

#: tasks shipped in configs/bench/
BUILTIN_TASKS = ("regions", "celltypes", "clusters")


@dataclass
class Sample:
    """One sample (section / slide) of a task: its AnnData (measured expression, labels, and
    ``uns["spatial"]`` when it has an image), its patient (``None`` for user data) and the class of
    each spot (``""`` = not evaluated: unlabelled, excluded or matching no class)."""

    name: str
    adata: ad.AnnData
    patient: str | None
    classes: np.ndarray
    has_image: bool

    @property
    def evaluated(self) -> np.ndarray:
        """Boolean mask ``(n_obs,)`` of the spots that carry a class."""
        return self.classes != ""


def load_task(name_or_path: str | Path) -> TaskConfig:
    """A task by built-in name (``"regions"``) or YAML path; checks the class definitions."""
    spec = f"bench/{name_or_path}" if str(name_or_path) in BUILTIN_TASKS else name_or_path
    task = load_config(TaskConfig, spec)
    if not task.classes:
        raise ConfigError(f"task {task.name!r}: no classes")
    names = [c.name for c in task.classes]
    if len(set(names)) != len(names):
        raise ConfigError(f"task {task.name!r}: duplicated class names {names}")
    if task.labels.source == "deconv_dominant" and not task.labels.groups:
        raise ConfigError(f"task {task.name!r}: labels.source deconv_dominant needs labels.groups")
    task_concepts(task)  # every named concept exists and names its class's query and synonyms
    return task


def load_concepts(path: str | Path = "bench/concepts") -> dict[str, Concept]:
    """The held-out concepts of ``configs/bench/concepts.yaml`` by name."""
    cfg = load_config(ConceptsConfig, path)
    out = {}
    for name, spec in cfg.concepts.items():
        try:
            out[name] = Concept(name, list(spec.patterns), list(spec.paraphrases))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    return out


def task_concepts(task: TaskConfig, base: Vocabulary | None = None) -> list[Concept | None]:
    """The held-out concept of each class of ``task`` (``None`` where a class names none), checked:
    the concept exists and its patterns match the class query and every synonym the query is
    ensembled with, so a model without the concept has read none of them."""
    wanted = [c.concept for c in task.classes]
    if not any(wanted):
        return [None] * len(wanted)
    concepts = load_concepts()
    vocab = task_vocabulary(task, base)
    out: list[Concept | None] = []
    for spec, name in zip(task.classes, wanted):
        if name is None:
            out.append(None)
            continue
        if name not in concepts:
            raise ConfigError(f"task {task.name!r}, class {spec.name!r}: unknown concept {name!r} "
                              f"(configs/bench/concepts.yaml has {sorted(concepts)})")
        term = vocab.lookup(class_query(spec))
        missed = [n for n in (term.names if term else [class_query(spec)]) if not concepts[name].named_in(n)]
        if missed:
            raise ConfigError(f"task {task.name!r}, class {spec.name!r}: concept {name!r} does not match {missed} "
                              "(its patterns must name the class query and every synonym)")
        out.append(concepts[name])
    return out


def class_query(spec: ClassSpec) -> str:
    return spec.query or spec.name


def task_vocabulary(task: TaskConfig, base: Vocabulary | None = None) -> Vocabulary:
    """A vocabulary with one term per class (name = the class query): synonyms, genes and proteins
    from the class spec, else from the base vocabulary term the query names; templates from ``base``."""
    base = base or load_vocabulary()
    terms = {}
    for spec in task.classes:
        q = class_query(spec)
        known = base.lookup(q)
        if known is None and (spec.genes is None or spec.synonyms is None):
            log.info("class %r: query %r is not a vocabulary term; no synonyms/markers unless given", spec.name, q)
        pick = lambda given, attr: list(given) if given is not None else (list(getattr(known, attr)) if known else [])  # noqa: E731
        terms[q] = Term(
            name=q,
            category=known.category if known else "other",
            synonyms=[s for s in pick(spec.synonyms, "names") if s != q],
            genes=pick(spec.genes, "genes"),
            proteins=pick(spec.proteins, "proteins"),
        )
    return Vocabulary(terms=terms, templates=base.templates)


def _matches(value: str, patterns: Sequence[str]) -> bool:
    v = value.strip().lower()
    return any(fnmatch.fnmatchcase(v, p.strip().lower()) for p in patterns)


def raw_labels(adata: ad.AnnData, task: TaskConfig) -> np.ndarray:
    """Per-spot label strings ``(n_obs,)`` before class mapping (``""`` where none)."""
    spec = task.labels
    if spec.source == "obs":
        if spec.key not in adata.obs:
            raise KeyError(f"no obs[{spec.key!r}] with labels (obs columns: {list(adata.obs.columns)})")
        col = adata.obs[spec.key]
        return np.where(col.isna().to_numpy(), "", col.astype(str).to_numpy()).astype(object)
    sums = {}
    for group, types in spec.groups.items():
        cols = [f"{keys.DECONV_PREFIX}{t}" for t in types]
        missing = [c for c in cols if c not in adata.obs]
        if missing:
            raise KeyError(f"deconvolution columns {missing} missing (have {[c for c in adata.obs if c.startswith(keys.DECONV_PREFIX)]})")
        sums[group] = adata.obs[cols].to_numpy(dtype=float).sum(axis=1)
    table = np.column_stack(list(sums.values()))
    ok = np.isfinite(table).all(axis=1)
    best = np.argmax(np.where(ok[:, None], table, -np.inf), axis=1)
    return np.where(ok, np.asarray(list(sums), dtype=object)[best], "").astype(object)


def assign_classes(labels: Sequence[str], task: TaskConfig) -> np.ndarray:
    """Class name per spot (``""`` = unlabelled, excluded or no class); a label matching two classes
    is an error, since one-vs-rest AUROC needs one class per spot."""
    labels = np.asarray(labels, dtype=object)
    out = np.full(len(labels), "", dtype=object)
    for value in pd.unique(labels):
        if value == "" or _matches(value, task.labels.exclude):
            continue
        hits = [c.name for c in task.classes if _matches(value, c.match or [c.name])]
        if len(hits) > 1:
            raise ConfigError(f"task {task.name!r}: label {value!r} matches several classes {hits}")
        if hits:
            out[labels == value] = hits[0]
    return out


def has_image(adata: ad.AnnData) -> bool:
    """True when ``uns["spatial"]`` names a source image file that exists."""
    for info in adata.uns.get(keys.SPATIAL, {}).values():
        path = info.get("metadata", {}).get(keys.SOURCE_IMAGE) if isinstance(info, dict) else None
        if path and Path(str(path)).exists():
            return True
    return False


def make_sample(name: str, adata: ad.AnnData, task: TaskConfig, patient: str | None) -> Sample:
    classes = assign_classes(raw_labels(adata, task), task)
    if not (classes != "").any():
        log.warning("sample %s: no spot belongs to a class of task %r", name, task.name)
    return Sample(name=name, adata=adata, patient=patient, classes=classes, has_image=has_image(adata))


def her2st_samples(data_dir: str | Path | None, task: TaskConfig, sections: Sequence[str] | None = None,
                   progress: bool = True, cache: dict[str, ad.AnnData] | None = None) -> list[Sample]:
    """The task's her2st sections (``sections`` overrides ``task.sections``), with their H&E when present;
    ``cache`` (section → AnnData) shares the reads between tasks."""
    from tqdm.auto import tqdm

    from ..io import list_sections, read_her2st

    names = list(sections or task.sections or list_sections(data_dir))
    out = []
    for s in tqdm(names, desc=f"read {task.name} sections", unit="section", disable=not progress):
        if cache is not None and s in cache:
            adata = cache[s]
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                adata = read_her2st(data_dir, s)
            for w in caught:  # spot-join notes of the reader: kept in uns["her2st_join"], logged here
                log.info("%s", w.message)
        if cache is not None:
            cache[s] = adata
        out.append(make_sample(s, adata, task, str(adata.obs[keys.PATIENT].iloc[0])))
    return out


def expression_view(adata: ad.AnnData, source: str) -> ad.AnnData:
    """``adata`` with usable expression: ``layers["log1p"]`` or counts in ``X`` kept; a scaled ``X``
    (negative values) is replaced by ``.raw`` (log1p values) when present, else an error."""
    if keys.LOG1P in adata.layers:
        return adata
    x = adata.X
    xmin = x.min() if sparse.issparse(x) else np.nanmin(np.asarray(x))
    if xmin >= 0:
        return adata
    if adata.raw is None:
        raise ValueError(
            f"{source}: X has negative values (scaled data) and there is no .raw; store log1p(counts per 10k) "
            "in layers['log1p'] or raw counts in X"
        )
    log.info("%s: X is scaled; using .raw (%d genes) as log1p expression", source, adata.raw.n_vars)
    out = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=pd.DataFrame(index=adata.raw.var_names), obsm=dict(adata.obsm),
                     uns=dict(adata.uns))
    out.layers[keys.LOG1P] = adata.raw.X
    return out


def h5ad_samples(paths: Sequence[str | Path], task: TaskConfig) -> list[Sample]:
    """Samples from user ``.h5ad`` files: split by ``obs[task.sample_key]`` when present, else one per file."""
    from ..io import read_h5ad

    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such .h5ad file")
        adata = expression_view(read_h5ad(p), str(p))
        if task.sample_key in adata.obs:
            groups = adata.obs[task.sample_key].astype(str)
            for g in pd.unique(groups):
                sub = adata[(groups == g).to_numpy()].copy()
                sub.obs[keys.SECTION] = g
                out.append(make_sample(g, sub, task, None))
        else:
            adata = adata.copy()
            adata.obs[keys.SECTION] = p.stem
            out.append(make_sample(p.stem, adata, task, None))
    return out


def read_spot_labels(path: str | Path, column: str | None = None) -> pd.Series:
    """Spot labels from a CSV: barcode → label. The barcode is the ``barcode`` column (else the first
    one); the label is ``column`` (else the only other column, else ``label``). Empty cells are NaN."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels CSV")
    table = pd.read_csv(path, dtype=str, sep=None, engine="python")
    if table.shape[1] < 2:
        raise ValueError(f"{path}: expected a barcode column and a label column, found {list(table.columns)}")
    bc = "barcode" if "barcode" in table.columns else table.columns[0]
    others = [c for c in table.columns if c != bc]
    col = column or (others[0] if len(others) == 1 else "label")
    if col not in table.columns:
        raise ValueError(f"{path}: no column {col!r} (columns: {list(table.columns)}); pick one with --label-column")
    labels = table.set_index(table[bc].str.strip())[col].str.strip()
    if labels.index.duplicated().any():
        raise ValueError(f"{path}: duplicated barcodes {labels.index[labels.index.duplicated()][:5].tolist()}")
    return labels.replace("", np.nan)


def labels_task(labels: Sequence[str], name: str = "labels", min_class_spots: int = 5,
                queries: Mapping[str, str] | None = None) -> TaskConfig:
    """A task whose classes are the label values themselves (query = the label text; a vocabulary term
    brings its synonyms, marker genes and proteins); ``queries`` maps label values onto the query of
    their class (several values may share one class, e.g. ``TLS`` and ``T_agg`` → "tertiary lymphoid
    structures"), the other values stay classes of their own."""
    values = sorted({str(v) for v in labels if isinstance(v, str) and v})
    if not values:
        raise ValueError("no labels: every spot's label is empty")
    queries = dict(queries or {})
    missing = sorted(set(queries) - set(values))
    if missing:
        raise ValueError(f"class map names label values {missing} that no spot carries (labels: {values})")
    mapped = {q: [v for v in values if queries.get(v) == q] for q in dict.fromkeys(queries.values())}
    classes = [ClassSpec(name=q, query=q, match=m) for q, m in mapped.items()]
    classes += [ClassSpec(name=v) for v in values if v not in queries]
    return TaskConfig(name=name, classes=classes, min_class_spots=min_class_spots,
                      description="Classes = the label values of the labels CSV (mapped onto queries where a class map "
                      "says so); each class queried by its own name.")


def visium_sample(folder: str | Path, labels_csv: str | Path, task: TaskConfig | None = None,
                  label_column: str | None = None, mpp: float | None = None,
                  queries: Mapping[str, str] | None = None) -> tuple[Sample, TaskConfig]:
    """A user's Space Ranger folder (:func:`spotwhisper.io.read_visium`; counts optional: an H&E-only folder
    is scored by its H&E routes) with spot labels from a CSV (barcode, label) → one sample and its task
    (``task``, else :func:`labels_task` of the labels, with the class map ``queries``)."""
    from ..io import read_visium

    adata = read_visium(folder, mpp=mpp)
    labels = read_spot_labels(labels_csv, label_column)
    barcodes = adata.obs[keys.BARCODE].astype(str)
    matched = barcodes.isin(labels.index)
    if not matched.any():
        raise ValueError(f"{labels_csv}: none of its barcodes is a spot of {folder} "
                         f"(e.g. CSV {labels.index[:2].tolist()} vs spots {barcodes.iloc[:2].tolist()})")
    if (~matched).any():
        log.info("%d of %d spots have no label in %s (left out of the evaluation)", int((~matched).sum()), len(matched), labels_csv)
    adata.obs[keys.LABEL] = labels.reindex(barcodes.to_numpy()).to_numpy()
    task = task or labels_task(adata.obs[keys.LABEL].dropna().tolist(), name=f"{Path(str(folder)).name} labels",
                               queries=queries)
    task.labels.source, task.labels.key = "obs", "label"
    name = str(adata.obs[keys.SECTION].iloc[0])
    return make_sample(name, adata, task, None), task
