"""An index folder on disk: manifest, checksums, atomic writes, a lock for writers, and block reads of embeddings.

Layout of a folder (format :data:`FORMAT`, version :data:`VERSION`)::

    manifest.json            what the folder holds; written last, replaced atomically
    embeddings-00000.npy     float32 or float16 (N0, D), one file per segment (``add`` writes a new segment)
    items-00000.csv          the segment's items: id, and label / path / text where known
    backend/                 a kNN backend's own saved state, when it keeps one
    .lock                    taken by writers (``flock``), so that two processes never add at once

Readers trust only what the manifest lists: a segment written by an interrupted ``add`` is never seen. Every listed
file carries its size and sha256, checked on load.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from omlcore.errors import OmlcoreError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "IndexFormatError",
    "file_record",
    "locked",
    "read_manifest",
    "read_rows",
    "replace_folder",
    "write_manifest",
]

FORMAT = "omlcore.Index"
VERSION = 1
MANIFEST = "manifest.json"
_LOCK = ".lock"
_HASH_CHUNK = 8 * 2**20


class IndexFormatError(OmlcoreError):
    """An index folder that cannot be used: missing, damaged, of another format version, or not fitting the query."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What the manifest keeps of a file: its size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _fsync_file(path: Path) -> None:
    with path.open("rb") as file:
        os.fsync(file.fileno())


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename)."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=folder, prefix=".manifest-", suffix=".tmp", delete=False
    ) as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(file.name, folder / MANIFEST)


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of an index folder, after checking its format, version and (``verify``) every file's checksum.

    Raises:
        IndexFormatError: no such folder, no manifest, another format or version, a missing, truncated or changed
            file (each named, with the fix).
    """
    if not folder.is_dir():
        raise IndexFormatError(f"no index folder '{folder}': build one with Index.save or `omlcore index build`")
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexFormatError(
            f"'{folder}' has no {MANIFEST}: it is not an omlcore index, or its build was interrupted; build it again"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"'{path}' is not valid JSON ({error}); build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"'{path}' is not the manifest of an omlcore index (format {FORMAT!r})")
    version = manifest.get("version")
    if version != VERSION:
        raise IndexFormatError(
            f"'{folder}' is an index of format version {version}; this omlcore reads version {VERSION}: build the "
            "index again with this version"
        )
    for name, record in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise IndexFormatError(f"'{file}', listed in the manifest, is missing; restore it or build the index again")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise IndexFormatError(
                f"'{file}' has {size} bytes, the manifest says {record['bytes']}: it is truncated or was changed; "
                "restore it or build the index again"
            )
        if verify and sha256_of(file) != record["sha256"]:
            raise IndexFormatError(
                f"'{file}' does not match its checksum in the manifest: it was changed or is corrupt; restore it or "
                "build the index again (Index.load(verify=False) skips this check)"
            )
    return manifest


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the index folder for the duration (writers wait for each other)."""
    with (folder / _LOCK).open("a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def replace_folder(built: Path, target: Path, overwrite: bool) -> None:
    """Move the complete folder ``built`` to ``target`` in one rename; an existing ``target`` is replaced only with
    ``overwrite`` (moved aside first, then deleted), so that no reader ever sees half an index."""
    if target.exists():
        if not overwrite:
            shutil.rmtree(built)
            raise IndexFormatError(f"'{target}' exists; choose another folder, or pass overwrite=True to replace it")
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(built, target)
        shutil.rmtree(aside)
    else:
        os.replace(built, target)


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a 2-D ``.npy`` file, read (not mapped): the pages go to the page cache, not to this
    process's resident memory."""
    with path.open("rb") as file:
        version = np.lib.format.read_magic(file)
        if version not in ((1, 0), (2, 0)):
            raise IndexFormatError(f"'{path}' is a .npy file of version {version}; omlcore writes 1.0")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(file)
        if fortran or len(shape) != 2:
            raise IndexFormatError(f"'{path}' is not a C-ordered 2-D array")
        row_bytes = shape[1] * dtype.itemsize
        file.seek(file.tell() + start * row_bytes)
        return np.fromfile(file, dtype=dtype, count=(stop - start) * shape[1]).reshape(stop - start, shape[1])
