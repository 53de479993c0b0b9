"""Stage 7 — FAISS indexes per route and collection, with metadata and a manifest.

``CollectionIndex.build`` / ``build_from_anndata`` write a collection under ``indexes/<name>/``;
``CollectionIndex.open(name).search(route, query_vectors, k)`` returns scored hits with their
slide, spot and coordinates. See ``indexes/README.md`` for the folder layout.
"""

from .config import IndexConfig, load_index_config, resolve_index_dir
from .errors import (
    BadVectorsError,
    CollectionExistsError,
    DimensionMismatchError,
    IndexFormatError,
    IndexLayerError,
    ModelMismatchError,
    UnknownCollectionError,
    UnknownRouteError,
    UnknownSlideError,
)
from .factory import bytes_per_vector, choose_factory
from .faiss_collection import CollectionIndex, list_collections, locate_collection
from .from_anndata import build_from_anndata, model_from_uns
from .manifest import Manifest, RouteModel, read_manifest, weights_fingerprint
from .metadata import SlideData, slides_from_anndata
from .results import IndexHits
from .vectors import as_unit_vectors

__all__ = [
    "BadVectorsError",
    "CollectionExistsError",
    "CollectionIndex",
    "DimensionMismatchError",
    "IndexConfig",
    "IndexFormatError",
    "IndexLayerError",
    "Manifest",
    "ModelMismatchError",
    "RouteModel",
    "IndexHits",
    "SlideData",
    "UnknownCollectionError",
    "UnknownRouteError",
    "UnknownSlideError",
    "as_unit_vectors",
    "build_from_anndata",
    "bytes_per_vector",
    "choose_factory",
    "list_collections",
    "load_index_config",
    "locate_collection",
    "model_from_uns",
    "read_manifest",
    "resolve_index_dir",
    "slides_from_anndata",
    "weights_fingerprint",
]
