"""Grow a collection one slide at a time, so the first slide is searchable long before the last.

:class:`ProgressiveBuild` runs the pipeline on slides in the order given (``spotwhisper demo`` puts
the smallest first), stages each one (:func:`.staging.stage_slide`) and commits it on its own
(:func:`.publish.publish`: the first slide creates the collection atomically, every later one is an
atomic ``add``). A reader that opened the collection sees each slide appear when its commit lands;
a run that is killed leaves a collection of the slides committed so far, and the next run adds
only the missing ones (finished but uncommitted slides are reused from staging).

``run_first()`` is meant for the foreground (progress bar, all threads), ``start()`` continues with
the rest in a background thread; :meth:`ProgressiveBuild.status` is a snapshot any thread can read
(the UI shows it, the CLI prints it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..index import list_collections, load_index_config, resolve_index_dir
from ..pipeline import Models, PipelineConfig
from .config import CollectionConfig, load_collection_config
from .publish import publish
from .staging import (
    FAILED,
    StagedSlide,
    model_fingerprint,
    plan_staging,
    read_index_view,
    slide_name,
    stage_slide,
    staging_folder,
)

log = logging.getLogger(__name__)


@dataclass
class BuildStatus:
    """Snapshot of a progressive build: slides ready (committed), failed, the one in progress."""

    total: int
    ready: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  #: spec → error
    current: str | None = None
    current_started: float | None = None  #: time.monotonic() when ``current`` started
    current_expected_s: float | None = None  #: estimate from the slides done so far
    seconds_per_spot: float | None = None  #: measured on the slides processed in this run
    current_spots: int = 0  #: spots of ``current`` (0 when unknown)

    @property
    def finished(self) -> bool:
        return len(self.ready) + len(self.failed) >= self.total

    def line(self) -> str:
        """One line in words, e.g. "3 of 6 slides ready; building C3 (about 40 s left)"."""
        text = f"{len(self.ready)} of {self.total} slide(s) ready"
        if self.failed:
            text += f"; {len(self.failed)} failed ({', '.join(self.failed)})"
        if self.current is not None:
            text += f"; building {self.current}" + (f" ({self.current_spots} spots)" if self.current_spots else "")
            if self.current_expected_s and self.current_started is not None:
                left = self.current_expected_s - (time.monotonic() - self.current_started)
                text += f" (about {max(left, 1):.0f} s left)" if left > 0 else " (finishing)"
        elif self.finished:
            text += "; the collection is complete"
        return text


class ProgressiveBuild:
    """Build ``collection`` from ``specs`` (section ids, .h5ad or images) one committed slide at a time.

    ``on_ready(slide_id)`` is called after each commit (from the building thread).
    """

    def __init__(self, collection: str, specs: Sequence[str], data_dir: str | Path | None = None, *,
                 index_dir: str | Path | None = None, models: Models | None = None,
                 pipeline: PipelineConfig | None = None, cfg: CollectionConfig | None = None,
                 overwrite: bool = False, on_ready: Callable[[str], None] | None = None):
        from ..config import load_config

        self.collection = collection
        self.data_dir = data_dir
        self.root = resolve_index_dir(index_dir, load_index_config())
        self.cfg = cfg or load_collection_config()
        self.pipeline = pipeline or load_config(PipelineConfig, "pipeline")
        self._models = models
        self.on_ready = on_ready
        self._overwrite = overwrite
        folder = staging_folder(collection, self.root, self.cfg)
        self.items: list[StagedSlide] = plan_staging(list(map(str, specs)), folder, data_dir, None,
                                                     model_fingerprint(self.pipeline, self.cfg))
        self._status = BuildStatus(total=len(self.items))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done: set[str] = set()  #: specs committed or failed in this run
        self._spots = 0
        self._seconds = 0.0

    @property
    def models(self) -> Models:
        """The pipeline models, loaded on first use."""
        if self._models is None:
            self._models = Models.load(self.pipeline)
        return self._models

    def status(self) -> BuildStatus:
        """A copy of the current state (safe to read from any thread)."""
        with self._lock:
            s = self._status
            return BuildStatus(s.total, list(s.ready), dict(s.failed), s.current, s.current_started,
                               s.current_expected_s, s.seconds_per_spot, s.current_spots)

    def mark_ready(self, slides: Sequence[str]) -> None:
        """Count ``slides`` (slide ids already in the collection) as ready; the specs naming them
        (a section id, or a file whose name is the slide id) are not built again."""
        have = set(slides)
        with self._lock:
            self.items = [it for it in self.items if it.spec not in have and it.label not in have]
            self._status.ready = list(slides)
            self._status.total = len(self._status.ready) + len(self.items)

    def pending(self) -> list[str]:
        """Specs not committed (nor failed) yet, in build order."""
        with self._lock:
            return [it.spec for it in self.items if it.spec not in self._done]

    def build_one(self, item: StagedSlide, progress: bool = False) -> str | None:
        """Process (or reuse from staging) and commit one slide → its slide id, or ``None`` when it failed."""
        n = _spot_estimate(item, self.data_dir)
        with self._lock:
            self._status.current, self._status.current_started = item.label, time.monotonic()
            self._status.current_expected_s, self._status.current_spots = None, n
        if item.path.is_file():
            log.info("%s: reusing staged %s", item.spec, item.path)
        else:
            with self._lock:
                if n and self._spots:
                    self._status.current_expected_s = n * self._seconds / self._spots
            stage_slide(item, self.models, self.pipeline, self.data_dir, None, progress=progress)
            if item.status == FAILED:
                log.warning("%s failed: %s", item.spec, item.error)
                with self._lock:
                    self._status.failed[item.spec] = item.error
                    self._status.current = None
                    self._done.add(item.spec)
                return None
            self._spots += item.n_spots
            self._seconds += item.seconds
        name = slide_name(read_index_view(item.path, []))
        exists = self.collection in list_collections(self.root)
        mode = "overwrite" if (self._overwrite and not self.status().ready) else ("add" if exists else "create")
        publish([item], self.collection, self.root, mode, self.cfg, progress=False)
        if not self.cfg.keep_staging:
            item.path.unlink(missing_ok=True)  # the collection holds a hard link (or copy) of it
        with self._lock:
            self._status.ready.append(name)
            self._status.current = None
            self._done.add(item.spec)
            if self._spots:
                self._status.seconds_per_spot = self._seconds / self._spots
        if self.on_ready is not None:
            self.on_ready(name)
        return name

    def run_first(self, progress: bool = True) -> str | None:
        """Build the first pending slide in the calling thread (with a progress bar) → its slide id."""
        todo = [it for it in self.items if it.spec in set(self.pending())]
        return self.build_one(todo[0], progress=progress) if todo else None

    def run_rest(self) -> None:
        """Build every pending slide in the calling thread; failures are recorded, not raised."""
        for item in [it for it in self.items if it.spec in set(self.pending())]:
            try:
                self.build_one(item)
            except Exception as err:  # noqa: BLE001 - a background build must not die silently
                log.exception("%s: could not be added", item.spec)
                with self._lock:
                    self._status.failed[item.spec] = f"{type(err).__name__}: {err}"
                    self._status.current = None
                    self._done.add(item.spec)

    def start(self) -> threading.Thread:
        """Build the pending slides in a daemon thread (returned; ``join()`` waits for the end)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self.run_rest, name=f"build-{self.collection}", daemon=True)
            self._thread.start()
        return self._thread


def _spot_estimate(item: StagedSlide, data_dir: str | Path | None) -> int:
    """Spots of a her2st section from its spot table (0 when unknown) — only for the time estimate."""
    from ..io.inputs import SECTION_RE

    if not SECTION_RE.match(item.spec):
        return 0
    try:
        from ..datadir import her2st_root

        path = her2st_root(data_dir) / "data" / "ST-spotfiles" / f"{item.spec}_selection.tsv"
        with open(path, encoding="utf-8") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    except OSError:
        return 0
