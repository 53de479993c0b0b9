"""Open a built collection: its FAISS indexes, its slide files and the model check, in one object.

:func:`open_collection` is how every reader starts (search, the UI, ``spotwhisper index`` commands
that read slides): it refuses a collection whose text route was built with another
transcriptome–text model than the one given (default: the shipped one), since its vectors would
not be comparable with the query embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..routes import TRANSCRIPTOME
from ..index import CollectionIndex, RouteModel
from ..index.from_anndata import TEXT_MODEL_NAME
from ..language import TextExpressionModel
from .store import SlideStore


@dataclass
class OpenedCollection:
    """A collection ready to be read: ``index`` (FAISS routes + manifest), ``store`` (slide files) and
    the ``text_model`` its text route was checked against."""

    name: str
    folder: Path
    index: CollectionIndex
    store: SlideStore
    text_model: TextExpressionModel

    def slides(self) -> list[str]:
        """Slide ids that have a slide file."""
        return self.store.slides()


def open_collection(collection: str, index_dir: str | Path | None = None,
                    text_model: TextExpressionModel | None = None) -> OpenedCollection:
    """Open ``<index_dir>/<collection>``; raises ``UnknownCollectionError`` when it does not exist and
    ``ModelMismatchError`` when its text route was built with another model than ``text_model``."""
    text = text_model or TextExpressionModel.from_pretrained()
    index = CollectionIndex.open(collection, index_dir=index_dir)
    if TRANSCRIPTOME in index.routes():
        index.check_models({TRANSCRIPTOME: RouteModel(TEXT_MODEL_NAME, text.config.embed_dim, text.fingerprint())})
    return OpenedCollection(collection, index.folder, index, SlideStore(index.folder), text)
