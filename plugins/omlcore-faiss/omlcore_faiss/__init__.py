"""omlcore-faiss: faiss k-nearest-neighbour backends for omlcore (see ``omlcore_faiss.backends``)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
