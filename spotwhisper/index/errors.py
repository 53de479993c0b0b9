"""Errors of the index layer; each names the collection, route or file concerned.

They derive from the built-in exceptions the CLI reports without a traceback
(``FileNotFoundError``, ``ValueError``), so callers may catch either.
"""

from __future__ import annotations


class IndexLayerError(Exception):
    """Base class of every index-layer error."""


class UnknownCollectionError(IndexLayerError, FileNotFoundError):
    """No collection of that name (the message lists the known ones)."""


class CollectionExistsError(IndexLayerError, ValueError):
    """A collection of that name already exists and overwriting was not asked for."""


class IndexFormatError(IndexLayerError, ValueError):
    """A collection folder or manifest is missing files or has an unknown format."""


class UnknownRouteError(IndexLayerError, KeyError):
    """The collection has no index for that route (the message lists its routes)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownSlideError(IndexLayerError, KeyError):
    """The collection holds no slide of that name (the message lists its slides)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DimensionMismatchError(IndexLayerError, ValueError):
    """Vectors have another dimension than the route's index."""


class ModelMismatchError(IndexLayerError, ValueError):
    """The index was built with other models (name, weights version or dimension) than the caller's."""


class BadVectorsError(IndexLayerError, ValueError):
    """Vectors are empty, not 2-D, non-finite or zero (cannot be L2-normalised)."""
