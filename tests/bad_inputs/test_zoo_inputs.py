"""The map of the zoo's bad inputs: forged, truncated and swapped files, bad file names, unusable cache folders and a
corrupt manifest, and what omlcore does with each.

Files are served from a temporary folder by a real HTTP server on 127.0.0.1. A forged file carries a pickle whose
unpickling creates a marker folder: the marker's absence proves that nothing was unpickled. Each case asserts the
named error (its file, its cause, its fix) or warning.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from omlcore.models import (
    CachedFileChangedError,
    CacheError,
    CacheWarning,
    DownloadError,
    PretrainedModel,
    SmallCNN,
    UnsafeCheckpointError,
    extra_pretrained,
    from_pretrained,
)
from omlcore.models.hub import download

CNN_ARGS = {"feat_dim": 16, "widths": [8, 16]}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Site:
    """A folder served over HTTP: what is written into ``folder`` is downloadable at ``url(name)``."""

    folder: Path
    port: int

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    folder = tmp_path / "site"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Site(folder, httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


class Mkdir:
    """Unpickling this object creates the folder ``path``: a stand-in for any code a forged file could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def saved(checkpoint: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def genuine_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SmallCNN(**CNN_ARGS).state_dict()


def publish(site: Site, name: str, data: bytes, digits: int = 8) -> PretrainedModel:
    """A zoo entry for ``data``, served by ``site``, that publishes the first ``digits`` hex digits of its md5."""
    (site.folder / f"{name}.ckpt").write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    return PretrainedModel(
        name, "small_cnn", (site.url(f"{name}.ckpt"),), md5[:digits], "md5", f"{name}.ckpt", CNN_ARGS
    )


def md5_prefix_twins(genuine: bytes, forged: bytes, digits: int = 6) -> tuple[bytes, bytes]:
    """``genuine`` and ``forged``, each with a suffix, whose md5 share their first ``digits`` hex digits (birthdays).

    A pickle ends at its STOP opcode, so the suffix changes nothing in what unpickling the forged file does.
    """
    seen: dict[str, dict[str, bytes]] = {"genuine": {}, "forged": {}}
    for nonce in range(1 << 20):
        for side, base, other in (("genuine", genuine, "forged"), ("forged", forged, "genuine")):
            data = base + b"#%d" % nonce
            prefix = hashlib.md5(data).hexdigest()[:digits]
            if prefix in seen[other]:
                twin = seen[other][prefix]
                return (data, twin) if side == "genuine" else (twin, data)
            seen[side][prefix] = data
    raise AssertionError("no md5 prefix collision found")


# --- forged files: nothing beyond weights_only=True is unpickled without the opt-in -------------------------------


def test_a_forged_zoo_file_whose_checksum_matches_is_refused_unread(site: Site, cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    entry = publish(site, "forged", saved({"state_dict": genuine_weights(), "hparams": Mkdir(marker)}))
    with extra_pretrained(entry), pytest.raises(UnsafeCheckpointError) as info:
        from_pretrained("forged", progress=False)
    assert not marker.exists()
    message = str(info.value)
    assert str(cache / "forged.ckpt") in message and "posix.mkdir" in message
    assert "allow_pickle=True" in message and "OMLCORE_ALLOW_UNSAFE_PICKLE=1" in message and "any code" in message


def test_a_forged_plain_pickle_is_refused_unread(site: Site, cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    entry = publish(site, "plain_pickle", pickle.dumps(Mkdir(marker), protocol=2))
    with extra_pretrained(entry), pytest.raises(UnsafeCheckpointError, match="OMLCORE_ALLOW_UNSAFE_PICKLE"):
        from_pretrained("plain_pickle", progress=False)
    assert not marker.exists()


def test_the_opt_in_runs_what_the_file_carries(
    site: Site, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What opting in risks: the forged file's code runs (here it only creates a folder)."""
    marker = tmp_path / "code-ran"
    entry = publish(site, "forged", saved({"state_dict": genuine_weights(), "hparams": Mkdir(marker)}))
    monkeypatch.setenv("OMLCORE_ALLOW_UNSAFE_PICKLE", "1")
    with extra_pretrained(entry):
        model = from_pretrained("forged", progress=False)
    assert marker.is_dir() and isinstance(model, SmallCNN)


# --- truncated and swapped files ----------------------------------------------------------------------------------


def test_a_truncated_download_is_discarded(site: Site, cache: Path) -> None:
    data = saved(genuine_weights())
    entry = publish(site, "cut", data)
    (site.folder / "cut.ckpt").write_bytes(data[:1000])  # the server now sends the first 1000 bytes only
    with extra_pretrained(entry), pytest.raises(DownloadError, match=r"cut\.ckpt"):
        from_pretrained("cut", progress=False)
    assert not (cache / "cut.ckpt").exists()


def test_a_cached_file_truncated_later_is_named_with_the_fix(site: Site, cache: Path) -> None:
    entry = publish(site, "cnn", saved(genuine_weights()))
    with extra_pretrained(entry):
        from_pretrained("cnn", progress=False)
        (cache / "cnn.ckpt").write_bytes((cache / "cnn.ckpt").read_bytes()[:1000])
        with pytest.raises(CachedFileChangedError) as info:
            from_pretrained("cnn", progress=False)
    message = str(info.value)
    assert str(cache / "cnn.ckpt") in message and str(cache / "manifest.json") in message
    assert "1000 bytes" in message and "Delete" in message and "download it again" in message


def test_a_cached_file_swapped_for_one_with_the_same_published_prefix_is_refused(
    site: Site, cache: Path, tmp_path: Path
) -> None:
    """The published 6-digit md5 prefix cannot tell the two files apart; the pinned sha256 can."""
    marker = tmp_path / "code-ran"
    genuine, forged = md5_prefix_twins(b"genuine weights", pickle.dumps(Mkdir(marker), protocol=2))
    entry = publish(site, "twin", genuine, digits=6)
    assert hashlib.md5(forged).hexdigest().startswith(entry.hash)
    with extra_pretrained(entry):
        assert entry.download(progress=False).read_bytes() == genuine
        (cache / "twin.ckpt").write_bytes(forged)
        with pytest.raises(CachedFileChangedError, match=hashlib.sha256(genuine).hexdigest()):
            from_pretrained("twin", progress=False)
    assert not marker.exists()
    (cache / "twin.ckpt").unlink()  # the fix: delete it, and the next use downloads it again
    assert entry.download(progress=False).read_bytes() == genuine


# --- file names that would leave the cache folder -----------------------------------------------------------------


@pytest.mark.parametrize("filename", ["../evil.ckpt", "/tmp/evil.ckpt", "sub/evil.ckpt", "sub\\evil.ckpt", "..", ""])
def test_a_zoo_entry_cannot_name_a_file_outside_the_cache(filename: str) -> None:
    with pytest.raises(ValueError, match=r"zoo entry 'evil'.*file name"):
        PretrainedModel("evil", "small_cnn", ("http://127.0.0.1/x",), "abcdef", "md5", filename)


@pytest.mark.parametrize("filename", [".hidden.ckpt", "manifest.json", "evil.ckpt\0"])
def test_names_the_cache_keeps_for_itself_are_refused(filename: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        PretrainedModel("evil", "small_cnn", ("http://127.0.0.1/x",), "abcdef", "md5", filename)


def test_download_checks_the_file_name_again_before_writing(site: Site, cache: Path, tmp_path: Path) -> None:
    entry = publish(site, "escape", b"weights")
    object.__setattr__(entry, "filename", "../escape.ckpt")  # past the entry's own check
    with pytest.raises(ValueError, match=r"'\.\./escape\.ckpt'"):
        entry.download(progress=False)
    with pytest.raises(ValueError, match="file name"):
        download(site.url("escape.ckpt"), "../../escape.ckpt", entry.hash, "md5", progress=False)
    assert not (cache.parent / "escape.ckpt").exists() and not (tmp_path / "escape.ckpt").exists()


# --- an unusable cache folder -------------------------------------------------------------------------------------


def test_a_cache_folder_that_is_a_file_is_named_with_the_fix(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = publish(site, "cnn", saved(genuine_weights()))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    for setting in (blocker, blocker / "cache"):
        monkeypatch.setenv("OMLCORE_CACHE_DIR", str(setting))
        with extra_pretrained(entry), pytest.raises(CacheError) as info:
            from_pretrained("cnn", progress=False)
        message = str(info.value)
        assert str(setting / "checkpoints") in message and f"{blocker} is a file, not a folder" in message
        assert (
            f"OMLCORE_CACHE_DIR={setting}" in message and "Set OMLCORE_CACHE_DIR to a folder you can write" in message
        )


def test_a_cache_folder_without_write_permission_is_named_with_the_fix(
    site: Site, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = publish(site, "cnn", saved(genuine_weights()))
    cache.mkdir(parents=True)
    cache.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway; report the folder as a normal user would see it
        monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: False)
    try:
        with extra_pretrained(entry), pytest.raises(CacheError, match="no permission to write") as info:
            from_pretrained("cnn", progress=False)
    finally:
        cache.chmod(0o755)
    assert str(cache) in str(info.value) and "OMLCORE_CACHE_DIR" in str(info.value)


# --- the manifest -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["{not json", '{"files": []}', '{"files": {"cnn.ckpt": {"sha256": 1}}}', "[]"])
def test_a_corrupt_manifest_is_named_and_rebuilt(site: Site, cache: Path, content: str) -> None:
    entry = publish(site, "cnn", saved(genuine_weights()))
    with extra_pretrained(entry):
        from_pretrained("cnn", progress=False)
        (cache / "manifest.json").write_text(content)
        with pytest.warns(CacheWarning, match=rf"{cache / 'manifest.json'} is corrupt"):
            from_pretrained("cnn", progress=False)  # checked against the published checksum, then pinned again
    pinned = json.loads((cache / "manifest.json").read_text())["files"]["cnn.ckpt"]
    assert pinned["sha256"] == hashlib.sha256((cache / "cnn.ckpt").read_bytes()).hexdigest()
