"""A persisted search index: embeddings and their items in a folder, searched many times (see :class:`Index`)."""

from omlcore.index.index import Index, IndexDtype, PersistableKNN
from omlcore.index.storage import FORMAT, VERSION, IndexFormatError

__all__ = ["FORMAT", "VERSION", "Index", "IndexDtype", "IndexFormatError", "PersistableKNN"]
