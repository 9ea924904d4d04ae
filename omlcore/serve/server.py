"""``omlcore serve``: the explorer of an index (and of a validation run) on a local web server (uvicorn)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omlcore.serve.explorer import Explorer
from omlcore.serve.thumbnails import Thumbnails, default_cache_folder
from omlcore.serve.uploads import MAX_UPLOAD_BYTES
from omlcore.utils.optional import require

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "build_app", "serve"]

#: Only this machine can connect unless another host is asked for.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_log = logging.getLogger("omlcore.serve")


def build_app(
    index: str | os.PathLike[str],
    run: str | os.PathLike[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    verify: bool = True,
) -> object:
    """The explorer app (a FastAPI app) over the index folder ``index`` and the run folder ``run``.

    ``cache``: where thumbnails are kept (default: under omlcore's cache folder, per index). ``verify`` checks every
    index file's sha256 on load.
    """
    require("fastapi", "serve", what="The explorer (omlcore serve)")
    from omlcore.serve.app import create_app
    from omlcore.serve.run import ValidationRun

    explorer = Explorer.open(index, verify=verify)
    validation = ValidationRun(run, explorer) if run is not None else None
    folder = Path(cache) if cache is not None else default_cache_folder(Path(index))
    return create_app(explorer, validation, thumbnails=Thumbnails(folder), max_upload_bytes=max_upload_bytes)


def serve(
    index: str | os.PathLike[str],
    run: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    cache: str | os.PathLike[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> None:
    """Serve the explorer until interrupted (see :func:`build_app`); binds ``127.0.0.1`` unless told otherwise."""
    uvicorn = require("uvicorn", "serve", what="The explorer (omlcore serve)")
    app = build_app(index, run, cache=cache, max_upload_bytes=max_upload_bytes)
    if host not in ("127.0.0.1", "localhost", "::1"):
        _log.warning(f"the explorer listens on {host}: other machines can reach it (it has no login)")
    _log.info(f"omlcore explorer of {index}: http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
