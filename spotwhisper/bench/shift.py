"""Shift conditions of the expression benchmark: a test section as another scanner or lab gives it.

A :class:`ShiftCondition` turns a section's slide into a :class:`~spotwhisper.tiles.views.SlideView`
(resampled to a coarser µm/px, HED-jittered, or mapped onto another section's stain vectors by
Macenko), so every H&E route is measured on exactly what a user with such a slide would feed it.
:class:`GivenRoutes` lets the zero-shot harness score H&E routes from predictions made here
(under a condition, by a model that never saw the section's patient).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from ..io.slide import Slide
from ..tiles.views import HedShift, StainTransfer, her2st_stains, slide_stains, view_of
from .context import RouteContext, RouteUnavailable


@dataclass
class ShiftCondition:
    """One row of the sweep: ``mpp`` resamples the slide (µm/px; ``None`` = as scanned), ``hed_sigma``
    applies a per-slide HED shift (densities scaled by 1 ± U(σ) and shifted by ± U(``hed_bias``), drawn
    from ``seed`` and the section), ``macenko_target`` maps the slide's stains onto a her2st section's
    (``"auto"``: the first of ``stain_donors`` that is not the section itself)."""

    name: str
    mpp: float | None = None
    hed_sigma: float = 0.0
    hed_bias: float = 0.01
    macenko_target: str | None = None
    seed: int = 0

    @property
    def is_native(self) -> bool:
        return self.mpp is None and not self.hed_sigma and self.macenko_target is None


def condition_view(slide: Slide, scale: float, cond: ShiftCondition, section: str,
                   data_dir: str | Path | None = None, stain_donors: Sequence[str] = ()) -> tuple[Slide, float, str]:
    """The slide as ``cond`` says → ``(slide or view, scale onto it, what was done)``."""
    if cond.is_native:
        return slide, scale, f"as scanned ({slide.mpp:.3f} µm/px)" if slide.mpp else "as scanned"
    stain, what = None, []
    if cond.hed_sigma:
        rng = np.random.default_rng([cond.seed, zlib.crc32(section.encode())])
        stain = HedShift.random(rng, cond.hed_sigma, cond.hed_bias)
        what.append(f"HED shift scale {np.round(stain.scale, 3).tolist()} shift {np.round(stain.shift, 3).tolist()}")
    elif cond.macenko_target is not None:
        target = cond.macenko_target
        if target == "auto":
            donors = [s for s in stain_donors if s != section]
            if not donors:
                raise ValueError(f"condition {cond.name!r}: no stain donor other than {section}")
            target = donors[0]
        stain = StainTransfer(slide_stains(slide), her2st_stains(data_dir, target), name=target)
        what.append(f"stain vectors of {target} (Macenko)")
    view, vscale = view_of(slide, scale, cond.mpp, stain)
    if cond.mpp is not None:
        what.insert(0, f"resampled to {view.mpp:.2f} µm/px")
    return view, vscale, "; ".join(what)


class FixedTextModel:
    """A stand-in for :class:`~spotwhisper.bench.text_models.TextModels` that hands out one text
    model (one that never saw the sample's patient) for every route."""

    def __init__(self, model):
        self.shipped = model
        self.used: dict[str, str] = {}

    def for_patient(self, patient: str | None):
        self.used[patient or "user data"] = "the text model of this benchmark (never saw this patient)"
        return self.shipped


class GivenRoutes(RouteContext):
    """Route context whose H&E resources (inferred expression, aligned embeddings) are given per sample."""

    def give(self, sample: str, inferred: ad.AnnData, aligned: np.ndarray | None) -> None:
        self._cache[f"inferred/{sample}"] = inferred
        self._cache.setdefault("given_aligned", {})[sample] = aligned

    def inferred(self, sample):  # noqa: D102 - see RouteContext
        key = f"inferred/{sample.name}"
        if key not in self._cache:
            raise RouteUnavailable("no prediction given")
        return self._cache[key]

    def aligned_embeddings(self, sample):  # noqa: D102
        emb = self._cache.get("given_aligned", {}).get(sample.name)
        if emb is None:
            raise RouteUnavailable("no aligned head")
        return emb
