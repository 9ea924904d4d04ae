"""Checkpoint files: the cache folder, verified and pinned downloads, and reading weights from disk safely.

Downloads go to ``<cache>/checkpoints/<filename>`` through a temporary file in the same folder that is
renamed into place only after every byte arrived and the checksum matched (``os.replace`` is atomic), so
an interrupted or corrupted download never leaves a half file where a checkpoint is expected. File names are
plain names inside that folder (no ``..``, no path separator, no leading dot), checked when a zoo entry is built
and again before anything is written.

The manifest. Publishers give a short checksum (OML: 6-8 hex digits of the md5, torchvision: 8 of the sha256),
which a forged file can match. So the first time a file is verified against its published checksum (downloaded,
or found in the cache, e.g. copied there by hand), its full sha256 and md5, size, URL (``null`` for a file found
in the cache) and the time are pinned in ``<cache>/checkpoints/manifest.json``::

    {"format": 1, "files": {"vits16_dino.ckpt": {"sha256": "...", "md5": "...", "size": 86728949,
                                                 "url": "https://...", "pinned_at": "2025-01-31T12:00:00+00:00"}}}

Every later use hashes the cached file again and compares it with its pin: a file that changed since (swapped,
truncated) raises :class:`CachedFileChangedError`; delete it to download it again. The manifest is written
atomically (temporary file + ``os.replace``); an unreadable or corrupt one is reported with a :class:`CacheWarning`
naming it, its pins are ignored (files are checked against their published checksums again) and it is rewritten.

Reading. :func:`load_checkpoint` unpickles nothing beyond ``torch.load(weights_only=True)`` (tensors and plain
containers) and reads TorchScript archives without running their code (:mod:`omlcore.models.torchscript`). A file
that needs more (a class in a pickle, code in a TorchScript archive) raises :class:`UnsafeCheckpointError`, unless
the user opts in, since that can run any code the file carries: a matching published checksum does not rule it out.

Environment:
    ``OMLCORE_CACHE_DIR``: the cache folder (default ``$XDG_CACHE_HOME/omlcore``, else ``~/.cache/omlcore``).
    ``OMLCORE_OFFLINE=1``: never touch the network; missing files raise :class:`DownloadError`.
    ``OMLCORE_ALLOW_UNSAFE_PICKLE=1``: the opt-in for every call (``allow_pickle=True`` is the opt-in for one):
    files that ``weights_only=True`` refuses are read with ``torch.load(weights_only=False)``, TorchScript archives
    that need their code with ``torch.jit.load``. Only for files whose origin you trust.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch

from omlcore.errors import OmlcoreError
from omlcore.models.torchscript import CodeRequiredError, read_tensors

__all__ = [
    "ENV_ALLOW_UNSAFE_PICKLE",
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "MANIFEST_NAME",
    "CacheError",
    "CacheWarning",
    "CachedFileChangedError",
    "CheckpointError",
    "ChecksumMismatchError",
    "DownloadError",
    "HashAlgorithm",
    "UnsafeCheckpointError",
    "cache_dir",
    "check_filename",
    "checkpoints_dir",
    "download",
    "file_hash",
    "hash_matches",
    "load_checkpoint",
    "unsafe_pickle_allowed",
]

ENV_CACHE_DIR = "OMLCORE_CACHE_DIR"
ENV_OFFLINE = "OMLCORE_OFFLINE"
ENV_ALLOW_UNSAFE_PICKLE = "OMLCORE_ALLOW_UNSAFE_PICKLE"
MANIFEST_NAME = "manifest.json"
"""The manifest's file name in the checkpoints folder; no zoo file may take it."""

HashAlgorithm = Literal["md5", "sha256"]

_CHUNK = 1 << 20
_MANIFEST_FORMAT = 1
_FILENAME = re.compile(r"\w[\w.+-]*")
_HEX = {"sha256": 64, "md5": 32}


class DownloadError(OmlcoreError, OSError):
    """A checkpoint could not be downloaded; the message lists every URL tried and how to place the file by hand."""


class ChecksumMismatchError(DownloadError):
    """A downloaded (or hand-placed) file does not have the published checksum."""


class CacheError(DownloadError):
    """The cache folder cannot be used (not a folder, not writable); the message names it and the fix."""


class CachedFileChangedError(CacheError):
    """A cached file no longer has the sha256 pinned in the manifest when it was first verified."""


class CacheWarning(UserWarning):
    """The manifest could not be read or written; the files are checked against their published checksums."""


class CheckpointError(OmlcoreError, ValueError):
    """A checkpoint file cannot be read, or its weights do not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """Reading the file needs full unpickling or TorchScript code, which could run anything; nobody opted in."""


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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _offline() -> bool:
    return _env_flag(ENV_OFFLINE)


def unsafe_pickle_allowed() -> bool:
    """Whether ``OMLCORE_ALLOW_UNSAFE_PICKLE`` opts in to full unpickling (``1``, ``true``, ``yes`` or ``on``)."""
    return _env_flag(ENV_ALLOW_UNSAFE_PICKLE)


def check_filename(filename: str) -> str:
    """``filename`` if it is a plain file name for the checkpoints folder, else a ValueError that names it.

    Letters, digits, ``_``, ``.``, ``+`` and ``-``, not starting with a dot: no ``..``, no absolute path, no path
    separator, so nothing is written outside the cache folder; hidden names are kept for temporary files, and
    :data:`MANIFEST_NAME` for the manifest.
    """
    if not isinstance(filename, str) or not _FILENAME.fullmatch(filename) or filename == MANIFEST_NAME:
        raise ValueError(
            f"file name {filename!r} is not a plain file name for the cache folder: use letters, digits, '_', '.', "
            f"'+' and '-', not starting with a dot and not {MANIFEST_NAME!r} (e.g. 'vits16_dino.ckpt')"
        )
    return filename


def _by_hand(target: Path, urls: Sequence[str], expected: str, algorithm: HashAlgorithm) -> str:
    sources = "".join(f"\n    {url}" for url in urls)
    return (
        f"To install it by hand, download it from{sources}\n"
        f"and save it as\n    {target}\n"
        f"(its {algorithm} must start with {expected}; `{algorithm}sum` prints it). "
        f"Set {ENV_CACHE_DIR} to use another cache folder, or pass the file's path as `weights=`."
    )


@dataclass(frozen=True)
class _Digests:
    """The full digests and the size of one file."""

    sha256: str
    md5: str
    size: int

    def of(self, algorithm: HashAlgorithm) -> str:
        return self.sha256 if algorithm == "sha256" else self.md5


def _digests(path: Path) -> _Digests:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return _Digests(sha256.hexdigest(), md5.hexdigest(), size)


def _valid_pin(pin: Any) -> bool:
    return (
        isinstance(pin, dict)
        and all(isinstance(pin.get(key), str) and len(pin[key]) == length for key, length in _HEX.items())
        and isinstance(pin.get("size"), int)
    )


def _read_manifest(folder: Path, *, warn: bool = True) -> dict[str, dict[str, Any]]:
    """``file name -> pin`` from the folder's manifest; none (with a :class:`CacheWarning`) if it is unreadable."""
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, dict) and all(_valid_pin(pin) for pin in files.values()):
            return files
        problem = 'expected {"format": 1, "files": {name: {"sha256", "md5", "size", ...}}}'
    if warn:
        warnings.warn(
            f"The checkpoint manifest {path} is corrupt or unreadable ({problem}). Its pins are ignored: cached files "
            "are checked against their published checksums and pinned again when it is rewritten.",
            CacheWarning,
            stacklevel=3,
        )
    return {}


def _pin(folder: Path, filename: str, digests: _Digests, url: str | None) -> None:
    """Record ``filename``'s digests in the folder's manifest, written atomically (temporary file + os.replace)."""
    files = _read_manifest(folder, warn=False)  # read again: another process may have pinned a file meanwhile
    files[filename] = {
        "sha256": digests.sha256,
        "md5": digests.md5,
        "size": digests.size,
        "url": url,
        "pinned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps({"format": _MANIFEST_FORMAT, "files": dict(sorted(files.items()))}, indent=1) + "\n"
    path = folder / MANIFEST_NAME
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST_NAME}.", suffix=".part")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as sink:
                sink.write(text)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as error:
        raise CacheError(
            f"Cannot write the checkpoint manifest {path} ({type(error).__name__}: {error}), so {filename} is not "
            f"pinned. Make {folder} writable, or set {ENV_CACHE_DIR} to a folder you can write to."
        ) from error


def _origin(directory_given: bool) -> str:
    if directory_given:
        return "it was passed as `directory`"
    explicit = os.environ.get(ENV_CACHE_DIR)
    return f"it comes from {ENV_CACHE_DIR}={explicit}" if explicit else f"it is the default ({ENV_CACHE_DIR} is unset)"


def _writable_folder(folder: Path, directory_given: bool) -> None:
    """Create ``folder`` if needed; a CacheError naming it, where it comes from and the fix if it cannot be used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = "" if os.access(folder, os.W_OK | os.X_OK) else "no permission to write in it"
    except OSError as error:
        blocker = next((p for p in (folder, *folder.parents) if os.path.exists(p) and not os.path.isdir(p)), None)
        problem = f"{blocker} is a file, not a folder" if blocker else f"{type(error).__name__}: {error.strerror}"
    if problem:
        raise CacheError(
            f"Cannot use the cache folder {folder}: {problem}; {_origin(directory_given)}. "
            f"Set {ENV_CACHE_DIR} to a folder you can write to (it is created if missing), or fix {folder}."
        )


def _changed(target: Path, pin: Mapping[str, Any], digests: _Digests) -> CachedFileChangedError:
    return CachedFileChangedError(
        f"{target} changed since it was verified: the manifest {target.parent / MANIFEST_NAME} pins sha256 "
        f"{pin['sha256']} ({pin['size']} bytes, pinned {pin.get('pinned_at', '')}), the file now has sha256 "
        f"{digests.sha256} ({digests.size} bytes). Something replaced or truncated it, so it is not used. "
        f"Delete {target} to download it again."
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
    """The verified local copy of a published file, downloaded on first use and pinned in the manifest.

    A cached file is used without any request when it matches its pin (full sha256 and size) in the manifest, or,
    not pinned yet, the published checksum (then it is pinned). Otherwise the URLs are tried in order; each download
    streams into a temporary file that replaces the target only when the size matches ``Content-Length`` and the
    checksum matches ``expected_hash`` (a hex digest or its published prefix); its full digests are then pinned.

    Args:
        urls: one URL or mirrors, tried in order.
        filename: name of the file in ``directory`` (see :func:`check_filename`).
        expected_hash: hex digest of ``algorithm``, or a prefix of it (at least 6 characters).
        directory: where to keep the file and the manifest; default :func:`checkpoints_dir`.
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for the server before giving up on a URL.

    Raises:
        ValueError: ``filename`` is not a plain file name, or ``expected_hash`` is too short.
        CachedFileChangedError: the cached file differs from its pin (delete it to download it again).
        CacheError: the folder cannot be created or written to.
        ChecksumMismatchError: every URL served a file with another checksum.
        DownloadError: offline, or no URL worked (the message says how to place the file by hand).
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if len(expected_hash) < 6:
        raise ValueError(f"expected_hash of {filename!r} must have at least 6 hex digits, got {expected_hash!r}")
    check_filename(filename)
    folder = Path(directory) if directory is not None else checkpoints_dir()
    target = folder / filename
    stale = ""
    if target.is_file():
        pin = _read_manifest(folder).get(filename)
        digests = _digests(target)
        if pin is not None and hash_matches(pin[algorithm], expected_hash):
            if (digests.sha256, digests.size) != (pin["sha256"], pin["size"]):
                raise _changed(target, pin, digests)
            return target
        if hash_matches(digests.of(algorithm), expected_hash):
            try:
                _pin(folder, filename, digests, url=None)
            except CacheError as error:  # a read-only cache filled by hand still serves its files
                warnings.warn(str(error), CacheWarning, stacklevel=2)
            return target
        stale = (
            f"The file already at {target} has {algorithm} {digests.of(algorithm)}, expected {expected_hash}...; "
            "it is replaced once a download succeeds.\n"
        )
        if not _offline():
            warnings.warn(stale.strip(), stacklevel=2)
    if not url_list or _offline():
        reason = f"{ENV_OFFLINE} is set" if _offline() else "no URL is known"
        raise DownloadError(
            f"Cannot download {filename}: {reason}.\n{stale}{_by_hand(target, url_list, expected_hash, algorithm)}"
        )
    _writable_folder(folder, directory is not None)
    failures: list[tuple[str, str]] = []
    mismatches = 0
    for url in url_list:
        try:
            digests = _fetch(url, target, expected_hash, algorithm, progress=progress, timeout=timeout)
        except ChecksumMismatchError as error:
            mismatches += 1
            failures.append((url, str(error)))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            failures.append((url, _describe(error)))
        else:
            _pin(folder, filename, digests, url)
            return target
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


def _fetch(
    url: str, target: Path, expected: str, algorithm: HashAlgorithm, *, progress: bool, timeout: float
) -> _Digests:
    """Stream ``url`` into a temporary file next to ``target``, check it, rename it into place; its digests."""
    from tqdm.auto import tqdm

    from omlcore import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"omlcore/{__version__}"})
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        sha256, md5 = hashlib.sha256(), hashlib.md5()
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
                    sha256.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"truncated: received {received} of {total} bytes (Content-Length)")
        digests = _Digests(sha256.hexdigest(), md5.hexdigest(), received)
        if not hash_matches(digests.of(algorithm), expected):
            raise ChecksumMismatchError(
                f"checksum mismatch for {target.name}: expected {algorithm} {expected}..., got {digests.of(algorithm)} "
                f"({received} bytes); the file was discarded"
            )
        os.replace(temporary, target)
        return digests
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _refusal(error: BaseException) -> str:
    """The sentence of torch's weights_only error that says what was refused (torch's advice is left out)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Check the documentation")
    detail = next((line for line in lines if not line.startswith(boilerplate)), lines[0] if lines else "")
    detail = detail.removeprefix("WeightsUnpickler error:").strip()
    return detail.split(". ")[0].rstrip(".") or type(error).__name__


def _unsafe(file: Path, error: BaseException, torchscript: bool) -> UnsafeCheckpointError:
    if torchscript:
        reason, reader, alternative = f"it is a TorchScript archive and {error}", "torch.jit.load", ""
    else:
        reason = f"it holds more than tensors and plain containers ({_refusal(error)})"
        reader = "torch.load(weights_only=False)"
        alternative = " To allow only the objects it needs, pass them to torch.serialization.add_safe_globals instead."
    return UnsafeCheckpointError(
        f"{file} was not loaded: {reason}. Reading it could run any code the file carries, with your permissions; "
        "a matching zoo checksum does not rule that out (publishers give only a short prefix of it). If you trust "
        "where the file comes from, opt in with allow_pickle=True (from_pretrained, load_weights, load_checkpoint) "
        f"or {ENV_ALLOW_UNSAFE_PICKLE}=1 in the environment, and it is read with {reader}.{alternative}"
    )


def _unreadable(file: Path, torchscript: bool, error: BaseException) -> CheckpointError:
    kind = "a TorchScript archive" if torchscript else "a PyTorch checkpoint"
    return CheckpointError(
        f"{file} cannot be read as {kind} ({type(error).__name__}: {_refusal(error)}); is it complete?"
    )


def _read_opted_in(file: Path, torchscript: bool) -> Any:
    """What the user opted in to: ``torch.jit.load`` or full unpickling, either of which can run the file's code."""
    try:
        if torchscript:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return dict(torch.jit.load(str(file), map_location="cpu").state_dict())
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:
        raise _unreadable(file, torchscript, error) from error


def load_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Mapping[str, Any]:
    """Read a checkpoint file into a mapping (a state dict, or a dict that holds one), on the CPU, running no code.

    Pickled files are read with ``torch.load(weights_only=True)``: tensors, plain containers and the classes
    allowed by ``torch.serialization.add_safe_globals``. TorchScript archives (OpenAI's CLIP files) give their
    ``state_dict()``, read by :func:`omlcore.models.torchscript.read_tensors` without running their code.

    Args:
        path: the checkpoint file.
        allow_pickle: the opt-in (as ``OMLCORE_ALLOW_UNSAFE_PICKLE=1``) for a file that needs more: it is then read
            with ``torch.load(weights_only=False)``, or a TorchScript archive with ``torch.jit.load``, which can run
            any code the file carries. Only for files whose origin you trust.

    Raises:
        UnsafeCheckpointError: the file needs more than that, and nobody opted in; the message names what.
        CheckpointError: the file is missing, unreadable, or does not hold a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"Checkpoint file {file} does not exist")
    torchscript = _is_torchscript(file)
    refused: type[Exception] = CodeRequiredError if torchscript else pickle.UnpicklingError
    try:
        loaded = read_tensors(file) if torchscript else torch.load(file, map_location="cpu", weights_only=True)
    except refused as error:
        if not (allow_pickle or unsafe_pickle_allowed()):
            raise _unsafe(file, error, torchscript) from error
        loaded = _read_opted_in(file, torchscript)
    except Exception as error:
        raise _unreadable(file, torchscript, error) from error
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{file} holds a {type(loaded).__name__}, not a state dict")
    return loaded
