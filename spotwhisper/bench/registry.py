"""The bench's route registry: what a route is, the table of registered routes and the cached call.

Holds no route itself (as timm's ``_registry.py`` holds no model): the scorers live in
:mod:`.scorers` and :mod:`.heldout_routes`, which register themselves with :func:`register_route`
when the package's ``__init__`` imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..routes import canonical_route
from .context import RouteContext, RouteUnavailable
from .tasks import Sample

ScoreFn = Callable[[Sample, Sequence[str], RouteContext], np.ndarray]


@dataclass(frozen=True)
class Route:
    """A registered route: ``name`` (CLI / JSON), ``title`` (table column) and its scorer."""

    name: str
    title: str
    fn: ScoreFn
    he_only: bool  #: uses nothing but the H&E image at inference time


ROUTES: dict[str, Route] = {}


def register_route(name: str, title: str, he_only: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator adding a scorer to :data:`ROUTES`."""

    def wrap(fn: ScoreFn) -> ScoreFn:
        ROUTES[name] = Route(name, title, fn, he_only)
        return fn

    return wrap


def route_scores(route: str, sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    """Scores ``(n_obs, C)`` of ``route`` on ``sample``, cached in ``ctx.scores`` (a
    :class:`RouteUnavailable` is cached and raised again)."""
    route = canonical_route(route)
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose from {list(ROUTES)}")
    key = (route, sample.name)
    if key not in ctx.scores:
        try:
            out = np.asarray(ROUTES[route].fn(sample, queries, ctx), dtype=np.float64)
            if out.shape != (sample.adata.n_obs, len(queries)):
                raise ValueError(f"route {route} returned {out.shape}, expected {(sample.adata.n_obs, len(queries))}")
            ctx.scores[key] = out
        except RouteUnavailable as err:
            ctx.scores[key] = err
    got = ctx.scores[key]
    if isinstance(got, RouteUnavailable):
        raise got
    return got
