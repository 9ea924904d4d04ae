"""Checkpoint files: the cache folder, verified downloads and reading weights from disk.

Downloads go to ``<cache>/checkpoints/<filename>`` through a temporary file in the same folder that is
renamed into place only after every byte arrived and the checksum matched (``os.replace`` is atomic), so
an interrupted or corrupted download never leaves a half file where a checkpoint is expected.

Environment:
    ``OMLCORE_CACHE_DIR``: the cache folder (default ``$XDG_CACHE_HOME/omlcore``, else ``~/.cache/omlcore``).
    ``OMLCORE_OFFLINE=1``: never touch the network; missing files raise :class:`DownloadError`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from omlcore.errors import OmlcoreError

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "CheckpointError",
    "ChecksumMismatchError",
    "DownloadError",
    "HashAlgorithm",
    "cache_dir",
    "checkpoints_dir",
    "download",
    "file_hash",
    "hash_matches",
    "load_checkpoint",
]

ENV_CACHE_DIR = "OMLCORE_CACHE_DIR"
ENV_OFFLINE = "OMLCORE_OFFLINE"

HashAlgorithm = Literal["md5", "sha256"]

_CHUNK = 1 << 20


class DownloadError(OmlcoreError, OSError):
    """A checkpoint could not be downloaded; the message lists every URL tried and how to place the file by hand."""


class ChecksumMismatchError(DownloadError):
    """A downloaded (or hand-placed) file does not have the published checksum."""


class CheckpointError(OmlcoreError, ValueError):
    """A checkpoint file cannot be read, or its weights do not fit the model."""


def cache_dir() -> Path:
    """omlcore's cache folder: ``$OMLCORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/omlcore``, else ``~/.cache/omlcore``."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "omlcore"


def checkpoints_dir() -> Path:
    """Where downloaded checkpoints live: ``cache_dir() / "checkpoints"``."""
    return cache_dir() / "checkpoints"


def file_hash(path: str | os.PathLike[str], algorithm: HashAlgorithm = "sha256") -> str:
    """Hex digest of the file at ``path``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_matches(actual: str, expected: str) -> bool:
    """True when hex digest ``actual`` starts with ``expected`` (publishers often give only a prefix)."""
    return bool(expected) and actual.lower().startswith(expected.lower())


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _by_hand(target: Path, urls: Sequence[str], expected: str, algorithm: HashAlgorithm) -> str:
    sources = "".join(f"\n    {url}" for url in urls)
    return (
        f"To install it by hand, download it from{sources}\n"
        f"and save it as\n    {target}\n"
        f"(its {algorithm} must start with {expected}; `{algorithm}sum` prints it). "
        f"Set {ENV_CACHE_DIR} to use another cache folder, or pass the file's path as `weights=`."
    )


def download(
    urls: str | Sequence[str],
    filename: str,
    expected_hash: str,
    algorithm: HashAlgorithm = "sha256",
    *,
    directory: str | os.PathLike[str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """The verified local copy of a published file, downloaded on first use.

    A cached file whose checksum matches is returned without any request. Otherwise the URLs are tried in
    order; each download streams into a temporary file that replaces the target only when the size matches
    ``Content-Length`` and the checksum matches ``expected_hash`` (a hex digest or its published prefix).

    Args:
        urls: one URL or mirrors, tried in order.
        filename: name of the file in ``directory``.
        expected_hash: hex digest of ``algorithm``, or a prefix of it (at least 6 characters).
        directory: where to keep the file; default :func:`checkpoints_dir`.
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for the server before giving up on a URL.

    Raises:
        ChecksumMismatchError: every URL served a file with another checksum.
        DownloadError: offline, or no URL worked (the message says how to place the file by hand).
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if len(expected_hash) < 6:
        raise ValueError(f"expected_hash of {filename!r} must have at least 6 hex digits, got {expected_hash!r}")
    folder = Path(directory) if directory is not None else checkpoints_dir()
    target = folder / filename
    stale = ""
    if target.is_file():
        actual = file_hash(target, algorithm)
        if hash_matches(actual, expected_hash):
            return target
        stale = (
            f"The file already at {target} has {algorithm} {actual}, expected {expected_hash}...; "
            "it is replaced once a download succeeds.\n"
        )
        if not _offline():
            warnings.warn(stale.strip(), stacklevel=2)
    if not url_list or _offline():
        reason = f"{ENV_OFFLINE} is set" if _offline() else "no URL is known"
        raise DownloadError(
            f"Cannot download {filename}: {reason}.\n{stale}{_by_hand(target, url_list, expected_hash, algorithm)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    mismatches = 0
    for url in url_list:
        try:
            _fetch(url, target, expected_hash, algorithm, progress=progress, timeout=timeout)
            return target
        except ChecksumMismatchError as error:
            mismatches += 1
            failures.append((url, str(error)))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            failures.append((url, _describe(error)))
    tried = "".join(f"\n  - {url}: {reason}" for url, reason in failures)
    error_class = ChecksumMismatchError if mismatches == len(failures) else DownloadError
    raise error_class(
        f"Could not download {filename} (nothing was written to {folder}):{tried}\n"
        f"{stale}{_by_hand(target, url_list, expected_hash, algorithm)}"
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, DownloadError):
        return str(error)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason}); are you offline?"
    if isinstance(error, http.client.IncompleteRead):
        return f"the connection closed early: got {len(error.partial)} more bytes, {error.expected} were missing"
    if isinstance(error, TimeoutError):
        return "the server did not answer in time"
    return f"{type(error).__name__}: {error}"


def _fetch(url: str, target: Path, expected: str, algorithm: HashAlgorithm, *, progress: bool, timeout: float) -> None:
    """Stream ``url`` into a temporary file next to ``target``, check it, then rename it into place."""
    from tqdm.auto import tqdm

    from omlcore import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"omlcore/{__version__}"})
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.new(algorithm)
        received = 0
        with os.fdopen(handle, "wb") as sink, urllib.request.urlopen(request, timeout=timeout) as response:
            if response.headers.get_content_type() == "text/html":
                raise DownloadError("the server sent an HTML page, not a checkpoint (a login or confirmation page?)")
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"truncated: received {received} of {total} bytes (Content-Length)")
        actual = digest.hexdigest()
        if not hash_matches(actual, expected):
            raise ChecksumMismatchError(
                f"checksum mismatch for {target.name}: expected {algorithm} {expected}..., got {actual} "
                f"({received} bytes); the file was discarded"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def load_checkpoint(path: str | os.PathLike[str], *, trusted: bool = False) -> Mapping[str, Any]:
    """Read a checkpoint file into a mapping (a state dict, or a dict that holds one), on the CPU.

    TorchScript archives (OpenAI's CLIP files) give their ``state_dict()``. Other files are read with
    ``torch.load(weights_only=True)``; a file that needs full unpickling is read that way only when
    ``trusted`` (zoo files whose checksum was verified), since unpickling can run code.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"Checkpoint file {file} does not exist")
    if _is_torchscript(file):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(file), map_location="cpu")
        return dict(scripted.state_dict())
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        if not trusted:
            raise CheckpointError(
                f"{file} holds more than tensors and plain containers, so it is not read with weights_only=True "
                f"({type(error).__name__}: {str(error).splitlines()[0]}). If you trust the file, load it yourself "
                "with torch.load(path, weights_only=False) and pass the state dict as `weights=`."
            ) from error
        loaded = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{file} holds a {type(loaded).__name__}, not a state dict")
    return loaded
