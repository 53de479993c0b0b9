"""How familiar a slide is to the image models: how far its spot tiles' image features lie from those
of the slides the models learned from.

A :class:`FeatureReference` is fitted on the training sections' spot-tile features (raw, before any
per-slide standardisation): their mean and scale, principal axes and a distance

    D(x) = sqrt((Σ_j (z·v_j)² / λ_j + ‖z − Σ_j (z·v_j) v_j‖² / r) / (k + 1)),   z = (x − μ) / σ,

(Mahalanobis on the first ``k`` axes plus the residual off them, scaled so that a typical training
tile has D ≈ 1). Each training section is also measured *held out* (against a reference fitted on the
others): the mean of their median D is what a new slide like the training slides looks like. A
slide's ``distance_ratio`` is its median D over that held-out median; ``share`` is the share of its
spots within ``tau``, the ``in_quantile`` of held-out training spots' D. :func:`slide_familiarity`
reads the ratio as a level (familiar / unusual / foreign) and one plain sentence, kept in
``uns["familiarity"]`` (:data:`spotwhisper.keys.FAMILIARITY`) by the pipeline. The thresholds
(``configs/familiarity.yaml``) were chosen on her2st: held-out training sections, another patient,
resampled and restained copies (``python benchmarks/familiarity.py``).

The reference lives beside the model's weights (``familiarity.npz`` in its folder), written by
``spotwhisper train expression`` or, for an existing model, ``spotwhisper train familiarity``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_file

log = logging.getLogger(__name__)

FILENAME = "familiarity.npz"
LEVELS = ("familiar", "unusual", "foreign")
#: spots whose distance is computed at once (float64 copies of ``(chunk, d)``: bounded memory on a whole slide)
DISTANCE_CHUNK = 4096


@dataclass
class FamiliarityConfig:
    """``configs/familiarity.yaml``: how the reference is fitted and how a slide's share is read."""

    variance: float = 0.95  #: principal axes kept: enough for this share of the standardised variance …
    max_components: int = 32  #: … but no more than this many
    in_quantile: float = 0.99  #: tau = this quantile of held-out training spots' distances
    familiar_ratio: float = 1.5  #: a slide whose median distance is at most this many held-out medians is familiar
    foreign_ratio: float = 2.5  #: above this many it is foreign (between: unusual)
    coarser_by: float = 1.1  #: a slide coarser than the model's µm/px by more than this factor gets a resolution note
    sentences: dict[str, str] = field(default_factory=lambda: {
        "familiar": "this slide resembles the slides the models learned from",
        "unusual": "this slide differs from the slides the models learned from (its image features lie {ratio:.1f}× "
                   "as far from theirs as theirs from each other): answers are less certain",
        "foreign": "this slide is unlike the slides the models learned from (its image features lie {ratio:.1f}× "
                   "as far from theirs as theirs from each other): answers are less certain",
    })


@dataclass
class FeatureReference:
    """Training feature distribution of one encoder (see the module docstring); arrays in float64."""

    encoder: str
    mean: np.ndarray  #: (d,)
    scale: np.ndarray  #: (d,)
    axes: np.ndarray  #: (k, d) principal axes of the standardised features
    eigvals: np.ndarray  #: (k,) variance along each axis
    residual: float  #: mean squared residual off the axes (training spots)
    tau: float  #: distance threshold (``in_quantile`` of held-out training spots)
    heldout_share: dict[str, float]  #: per training section: share of its spots within tau when held out
    heldout_median: dict[str, float] = field(default_factory=dict)  #: per training section: median D when held out

    def distance(self, x: np.ndarray) -> np.ndarray:
        """D ``(n,)`` of spot features ``x`` ``(n, d)`` (≈ 1 for a typical training spot)."""
        x = np.asarray(x)
        d2 = np.empty(len(x))
        for start in range(0, len(x), DISTANCE_CHUNK):  # float64 copies of one chunk at a time (whole slides)
            z = (x[start:start + DISTANCE_CHUNK].astype(np.float64) - self.mean) / self.scale
            proj = z @ self.axes.T
            resid = ((z - proj @ self.axes) ** 2).sum(1)
            d2[start:start + DISTANCE_CHUNK] = (proj**2 / self.eigvals).sum(1) + resid / max(self.residual, 1e-12)
        return np.sqrt(d2 / (len(self.eigvals) + 1))

    @property
    def reference_median(self) -> float:
        """Mean of the held-out training sections' median D (1.0 when unknown)."""
        return float(np.mean(list(self.heldout_median.values()))) if self.heldout_median else 1.0

    def share_within(self, x: np.ndarray) -> float:
        """Share of the spots of ``x`` ``(n, d)`` within ``tau``."""
        return float(np.mean(self.distance(x) <= self.tau))

    @classmethod
    def fit(cls, encoder: str, sections: Mapping[str, np.ndarray], cfg: FamiliarityConfig | None = None) -> FeatureReference:
        """Fit on raw spot-tile features per training section (name → ``(n_i, d)``); ``tau`` from
        leave-one-section-out distances (in-sample ones when there is a single section)."""
        cfg = cfg or FamiliarityConfig()
        if not sections:
            raise ValueError("a familiarity reference needs the features of at least one training section")
        full = _fit_axes(encoder, np.vstack(list(sections.values())), cfg)
        held: dict[str, np.ndarray] = {}
        for name, x in sections.items():
            rest = [v for k, v in sections.items() if k != name]
            ref = _fit_axes(encoder, np.vstack(rest), cfg) if rest else full
            held[name] = ref.distance(x)
        pooled = np.concatenate(list(held.values()))
        full.tau = float(np.quantile(pooled, cfg.in_quantile))
        full.heldout_share = {k: float(np.mean(v <= full.tau)) for k, v in held.items()}
        full.heldout_median = {k: float(np.median(v)) for k, v in held.items()}
        return full

    def save(self, folder: str | Path) -> Path:
        """Write ``familiarity.npz`` into a model folder (atomically)."""
        path = Path(folder) / FILENAME
        with atomic_file(path, suffix=".npz") as tmp:
            np.savez(tmp, encoder=self.encoder, mean=self.mean, scale=self.scale, axes=self.axes, eigvals=self.eigvals,
                     residual=self.residual, tau=self.tau, heldout_names=np.array(list(self.heldout_share), dtype=str),
                     heldout_values=np.array(list(self.heldout_share.values()), dtype=np.float64),
                     heldout_medians=np.array([self.heldout_median.get(k, np.nan) for k in self.heldout_share]))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureReference | None:
        """The reference saved in a model folder, or ``None`` when it has none."""
        path = Path(folder) / FILENAME
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as f:
            names = f["heldout_names"].tolist()
            shares = dict(zip(names, f["heldout_values"].tolist()))
            medians = dict(zip(names, f["heldout_medians"].tolist())) if "heldout_medians" in f else {}
            return cls(str(f["encoder"]), f["mean"], f["scale"], f["axes"], f["eigvals"], float(f["residual"]),
                       float(f["tau"]), shares, medians)


def _fit_axes(encoder: str, x: np.ndarray, cfg: FamiliarityConfig) -> FeatureReference:
    x = np.asarray(x, dtype=np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    _, sv, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    var = sv**2 / max(len(z) - 1, 1)
    frac = np.cumsum(var) / max(var.sum(), 1e-12)
    k = int(min(cfg.max_components, np.searchsorted(frac, cfg.variance) + 1, len(var)))
    axes, eig = vt[:k], np.maximum(var[:k], 1e-9)
    proj = z @ axes.T
    residual = float(((z - proj @ axes) ** 2).sum(1).mean())
    return FeatureReference(encoder, mean, scale, axes, eig, residual, np.inf, {})


def slide_familiarity(features: np.ndarray, reference: FeatureReference, cfg: FamiliarityConfig | None = None,
                      epistemic: np.ndarray | None = None, mpp: float | None = None, model_mpp: float | None = None,
                      ) -> dict:
    """Familiarity of one slide from its raw spot-tile features ``(n, d)``: ``distance_ratio`` (median
    distance over the held-out training median), ``level`` (familiar / unusual / foreign) and ``sentence``
    from it, ``share`` of spots within the training range, and — when given — the median epistemic
    variance of the inferred expression and the slide's µm/px next to the one the model reads (``model_mpp``)."""
    cfg = cfg or FamiliarityConfig()
    dist = reference.distance(features)
    share = float(np.mean(dist <= reference.tau))
    ratio = float(np.median(dist)) / reference.reference_median
    level = "familiar" if ratio <= cfg.familiar_ratio else "unusual" if ratio <= cfg.foreign_ratio else "foreign"
    out = {"level": level, "sentence": cfg.sentences[level].format(ratio=ratio, share=share),
           "distance_ratio": ratio, "share": share, "median_distance": float(np.median(dist)),
           "reference_median": reference.reference_median, "encoder": reference.encoder}
    if epistemic is not None:
        out["epistemic_median"] = float(np.median(epistemic))
    if mpp is not None:
        out["mpp"] = float(mpp)
    if model_mpp is not None:
        out["model_mpp"] = float(model_mpp)
        if mpp is not None and mpp > model_mpp * cfg.coarser_by:
            out["resolution_note"] = (f"the slide is {mpp:.2f} µm/px, coarser than the {model_mpp:g} µm/px the image "
                                      "model reads: fine detail is missing")
    return out
