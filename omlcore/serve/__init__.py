"""The retrieval explorer: ``omlcore serve <index> [--run <validation run>]``, a local web app over a persisted index.

Search by an uploaded image or by any item, page through the ranking (correct / wrong / missed frames where labels
are known), switch postprocessors and see ranks move; for a validation run, its metric table, worst queries and each
query's full ranking. A JSON API (``/api/...``, schema at ``/openapi.json``) serves the same. Needs
``pip install "omlcore[serve]"`` (FastAPI, uvicorn, python-multipart); importing this package imports none of them.
"""

from omlcore.serve.explorer import Explorer, ExplorerError, Item, UnknownItemError
from omlcore.serve.scan import GalleryScan
from omlcore.serve.server import DEFAULT_HOST, DEFAULT_PORT, build_app, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Explorer",
    "ExplorerError",
    "GalleryScan",
    "Item",
    "UnknownItemError",
    "build_app",
    "serve",
]
