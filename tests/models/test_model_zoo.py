"""The zoo's download path against a real HTTP server on 127.0.0.1, the cache, and from_pretrained end to end.

No test touches the internet: zoo entries made here point at the local server, and the built-in entries are
only inspected (and refused a download with OMLCORE_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from omlcore.config import resolve
from omlcore.errors import UnknownComponentError
from omlcore.models import (
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    ExtractorWithMLP,
    PretrainedModel,
    SmallCNN,
    UnsafeCheckpointError,
    ViTExtractor,
    cache_dir,
    checkpoints_dir,
    extra_pretrained,
    find_pretrained,
    from_pretrained,
    get_pretrained,
    list_pretrained,
    transforms_for_pretrained,
)
from omlcore.models.catalog import BUILTIN_PRETRAINED, OML_DOCS_ZOO_SOURCE, OML_ZOO_SOURCE
from omlcore.models.hub import download, file_hash
from omlcore.plugins import get_registry
from omlcore.transforms import CLIP_MEAN, IMAGENET_MEAN, Compose, Normalize


class FileServer:
    """Serves ``files`` (path -> bytes); paths in ``truncate`` send only that many bytes of a full Content-Length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.truncate: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", server.content_types.get(self.path, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.truncate.get(self.path, len(body))])
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[FileServer]:
    served = FileServer()
    served.thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.ckpt"


def payload(size: int = 50_000) -> bytes:
    return bytes(range(256)) * (size // 256)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_then_cache_hit_without_a_request(server: FileServer, cache: Path) -> None:
    data = payload()
    server.files["/m.bin"] = data
    path = download(server.url("/m.bin"), "m.bin", sha256(data), "sha256", progress=True)
    assert path == cache / "m.bin" and path.read_bytes() == data and leftovers(cache) == ["m.bin", "manifest.json"]
    again = download(server.url("/m.bin"), "m.bin", sha256(data)[:8], "sha256", progress=False)
    assert again == path and server.requests == ["/m.bin"]  # verified from disk, no second request
    md5 = hashlib.md5(data).hexdigest()[:6]  # OML publishes md5 prefixes
    assert download([server.url("/m.bin")], "m.bin", md5, "md5") == path and len(server.requests) == 1


def test_checksum_mismatch_names_file_and_hashes_and_keeps_nothing(server: FileServer, cache: Path) -> None:
    good, corrupted = payload(), b"X" + payload()[1:]
    server.files["/m.bin"] = corrupted
    with pytest.raises(ChecksumMismatchError) as info:
        download(server.url("/m.bin"), "m.bin", sha256(good), "sha256", progress=False)
    message = str(info.value)
    assert "m.bin" in message and sha256(good) in message and sha256(corrupted) in message
    assert str(cache / "m.bin") in message and "download it from" in message
    assert leftovers(cache) == []


def test_truncated_download_is_an_error_and_keeps_nothing(server: FileServer, cache: Path) -> None:
    data = payload()
    server.files["/m.bin"] = data
    server.truncate["/m.bin"] = 1000
    with pytest.raises(DownloadError, match=r"(truncated: received 1000 of 49920 bytes|closed early)") as info:
        download(server.url("/m.bin"), "m.bin", sha256(data), "sha256", progress=False)
    assert not isinstance(info.value, ChecksumMismatchError) and leftovers(cache) == []


def test_offline_explains_how_to_place_the_file_by_hand(refused_url: str, cache: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download(refused_url, "model.ckpt", "abcdef12", "md5", progress=False)
    message = str(info.value)
    assert refused_url in message and "cannot connect" in message and "are you offline?" in message
    assert f"save it as\n    {cache / 'model.ckpt'}" in message and "md5 must start with abcdef12" in message
    assert "OMLCORE_CACHE_DIR" in message and "weights=" in message and leftovers(cache) == []


def test_offline_switch_makes_no_request(server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/m.bin"] = payload()
    monkeypatch.setenv("OMLCORE_OFFLINE", "1")
    with pytest.raises(DownloadError, match="OMLCORE_OFFLINE is set"):
        download(server.url("/m.bin"), "m.bin", sha256(payload()), "sha256")
    assert server.requests == []
    cache.mkdir(parents=True)
    (cache / "m.bin").write_bytes(payload())  # placed by hand: used offline
    assert download(server.url("/m.bin"), "m.bin", sha256(payload()), "sha256") == cache / "m.bin"


def test_mirrors_are_tried_in_order(server: FileServer, cache: Path, refused_url: str) -> None:
    data = payload()
    server.files["/mirror.bin"] = data
    path = download(
        [refused_url, server.url("/missing.bin"), server.url("/mirror.bin")], "m.bin", sha256(data), progress=False
    )
    assert path.read_bytes() == data and server.requests == ["/missing.bin", "/mirror.bin"]
    server.files["/page.html"] = b"<html>confirm</html>"
    server.content_types["/page.html"] = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"HTTP 404 Not Found(.|\n)*HTML page") as info:
        download([server.url("/missing.bin"), server.url("/page.html")], "x.bin", "a" * 64, progress=False)
    assert not isinstance(info.value, ChecksumMismatchError) and leftovers(cache) == ["m.bin", "manifest.json"]


def test_a_wrong_file_in_the_cache_is_replaced(server: FileServer, cache: Path) -> None:
    data = payload()
    server.files["/m.bin"] = data
    cache.mkdir(parents=True)
    (cache / "m.bin").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="has sha256 .* expected"):
        path = download(server.url("/m.bin"), "m.bin", sha256(data), progress=False)
    assert path.read_bytes() == data


def test_a_new_version_of_a_pinned_file_replaces_it_and_its_pin(server: FileServer, cache: Path) -> None:
    old, new = payload(), b"Y" + payload()[1:]
    server.files["/m.bin"] = old
    download(server.url("/m.bin"), "m.bin", sha256(old)[:8], progress=False)
    server.files["/m.bin"] = new  # the publisher's entry now names another file under the same name
    with pytest.warns(UserWarning, match="replaced once a download succeeds"):
        path = download(server.url("/m.bin"), "m.bin", sha256(new)[:8], progress=False)
    assert path.read_bytes() == new
    assert json.loads((cache / "manifest.json").read_text())["files"]["m.bin"]["sha256"] == sha256(new)


def test_an_interrupted_download_leaves_no_file(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tqdm.auto

    server.files["/m.bin"] = payload(3_000_000)

    def interrupt(self: object, n: float | None = 1) -> bool | None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.auto.tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        download(server.url("/m.bin"), "m.bin", sha256(payload(3_000_000)))
    assert leftovers(cache) == []


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMLCORE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "omlcore"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert checkpoints_dir() == tmp_path / "xdg" / "omlcore" / "checkpoints"
    monkeypatch.setenv("OMLCORE_CACHE_DIR", str(tmp_path / "mine"))
    assert checkpoints_dir() == tmp_path / "mine" / "checkpoints"


CNN_ARGS = {"feat_dim": 16, "widths": [8, 16]}


@pytest.fixture
def served_zoo(server: FileServer, cache: Path) -> Iterator[dict[str, bytes]]:
    """Two zoo entries whose files live on the local server: a small CNN and an MLP head on it (OML wrapper)."""
    torch.manual_seed(0)
    files = {}
    cnn = SmallCNN(feat_dim=16, widths=(8, 16))
    buffer = io.BytesIO()
    torch.save(cnn.state_dict(), buffer)
    files["test_small_cnn"] = buffer.getvalue()
    head = ExtractorWithMLP({"name": "small_cnn", "args": CNN_ARGS}, mlp_features=[8])
    buffer = io.BytesIO()
    torch.save({"state_dict": head.state_dict(), "epoch": 1}, buffer)
    files["test_mlp_head"] = buffer.getvalue()
    entries = [
        PretrainedModel(
            name="test_small_cnn",
            arch="small_cnn",
            urls=(server.url("/test_small_cnn.pth"),),
            hash=sha256(files["test_small_cnn"])[:10],
            hash_algorithm="sha256",
            filename="test_small_cnn.pth",
            init_args={"feat_dim": 16, "widths": [8, 16], "normalise_features": True},
            transform="resize_normalize",
            transform_args={"size": 32},
            aliases=("tiny_cnn",),
        ),
        PretrainedModel(
            name="test_mlp_head",
            arch="extractor_with_mlp",
            urls=(server.url("/test_mlp_head.ckpt"),),
            hash=hashlib.md5(files["test_mlp_head"]).hexdigest()[:8],
            hash_algorithm="md5",
            filename="test_mlp_head.ckpt",
            init_args={
                "extractor": {"name": "small_cnn", "args": {"feat_dim": 16, "widths": [8, 16]}},
                "mlp_features": [8],
            },
        ),
    ]
    for entry in entries:
        server.files[f"/{entry.filename}"] = files[entry.name]
    with extra_pretrained(*entries):
        yield files


def _same_weights(model: torch.nn.Module, file: bytes) -> None:
    saved = torch.load(io.BytesIO(file), weights_only=True)
    saved = saved.get("state_dict", saved)
    assert model.state_dict().keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_from_pretrained_end_to_end(server: FileServer, served_zoo: dict[str, bytes], cache: Path) -> None:
    model = from_pretrained("test_small_cnn", progress=False)
    assert isinstance(model, SmallCNN) and model.feat_dim == 16 and model.normalise_features
    _same_weights(model, served_zoo["test_small_cnn"])
    assert server.requests == ["/test_small_cnn.pth"] and leftovers(cache) == ["manifest.json", "test_small_cnn.pth"]
    again = SmallCNN.from_pretrained("tiny_cnn", normalise_features=False)  # alias, an override, cache hit
    assert not again.normalise_features and len(server.requests) == 1
    by_weights = SmallCNN(feat_dim=16, widths=(8, 16), weights="test_small_cnn")
    _same_weights(by_weights, served_zoo["test_small_cnn"])
    from_config = resolve("extractor", {"name": "pretrained", "args": {"name": "tiny_cnn"}})
    _same_weights(from_config, served_zoo["test_small_cnn"])
    config = {"name": "small_cnn", "args": {**CNN_ARGS, "weights": "test_small_cnn"}}  # weights= in a config
    _same_weights(resolve("extractor", config), served_zoo["test_small_cnn"])
    head_on_pretrained_trunk = ExtractorWithMLP(config, mlp_features=[4], freeze_trunk=True)
    _same_weights(head_on_pretrained_trunk.extractor, served_zoo["test_small_cnn"])
    transform = get_registry().build("transform", "pretrained", name="test_small_cnn")
    assert transform(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    assert len(server.requests) == 1

    head = ExtractorWithMLP.from_pretrained("test_mlp_head")
    _same_weights(head, served_zoo["test_mlp_head"])
    assert head(torch.randn(2, 3, 16, 16)).shape == (2, 8)


def test_from_pretrained_checks_the_class_and_arch_before_downloading(
    server: FileServer, served_zoo: dict[str, bytes]
) -> None:
    with pytest.raises(TypeError, match="'test_small_cnn' is a SmallCNN, not a ViTExtractor"):
        ViTExtractor.from_pretrained("test_small_cnn")
    with pytest.raises(CheckpointError, match="are for a 'small_cnn' extractor, this one is 'vits16'"):
        ViTExtractor("vits16", weights="test_small_cnn")
    with pytest.raises(TypeError, match="takes the weights from the zoo"):
        from_pretrained("test_small_cnn", weights="x")
    with pytest.raises(UnknownComponentError, match="Did you mean: test_small_cnn"):
        from_pretrained("test_smal_cnn")
    assert server.requests == []


def test_a_corrupted_zoo_file_fails_from_pretrained(
    server: FileServer, served_zoo: dict[str, bytes], cache: Path
) -> None:
    server.files["/test_small_cnn.pth"] = b"X" + served_zoo["test_small_cnn"][1:]
    with pytest.raises(ChecksumMismatchError, match=r"test_small_cnn\.pth"):
        from_pretrained("test_small_cnn", progress=False)
    assert leftovers(cache) == []


def test_the_manifest_pins_the_full_sha256_of_every_file(
    server: FileServer, served_zoo: dict[str, bytes], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_pretrained("test_mlp_head", progress=False)
    data = served_zoo["test_mlp_head"]
    manifest = json.loads((cache / "manifest.json").read_text())
    pinned = manifest["files"]["test_mlp_head.ckpt"]
    assert list(manifest["files"]) == ["test_mlp_head.ckpt"] and manifest["format"] == 1
    assert pinned["sha256"] == sha256(data) and pinned["md5"] == hashlib.md5(data).hexdigest()
    assert pinned["size"] == len(data) and pinned["url"] == server.url("/test_mlp_head.ckpt")
    assert pinned["pinned_at"].endswith("+00:00")
    assert leftovers(cache) == ["manifest.json", "test_mlp_head.ckpt"]  # no temporary file left

    monkeypatch.setenv("OMLCORE_OFFLINE", "1")
    (cache / "test_small_cnn.pth").write_bytes(served_zoo["test_small_cnn"])  # placed by hand
    from_pretrained("test_small_cnn")
    files = json.loads((cache / "manifest.json").read_text())["files"]
    by_hand = files["test_small_cnn.pth"]
    assert by_hand["url"] is None and by_hand["sha256"] == sha256(served_zoo["test_small_cnn"])
    assert files["test_mlp_head.ckpt"] == pinned


def test_python_objects_in_a_zoo_checkpoint_need_the_opt_in(
    server: FileServer, served_zoo: dict[str, bytes], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint with hyper-parameters in a Namespace (as Lightning may keep them) is refused unless opted in."""
    checkpoint = torch.load(io.BytesIO(served_zoo["test_mlp_head"]), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**checkpoint, "hyper_parameters": argparse.Namespace(lr=0.1)}, buffer)
    entry = PretrainedModel(
        "test_with_hparams",
        "extractor_with_mlp",
        (server.url("/hparams.ckpt"),),
        sha256(buffer.getvalue()),
        "sha256",
        "hparams.ckpt",
        get_pretrained("test_mlp_head").init_args,
    )
    server.files["/hparams.ckpt"] = buffer.getvalue()
    with extra_pretrained(entry):
        with pytest.raises(UnsafeCheckpointError) as info:
            from_pretrained("test_with_hparams", progress=False)
        message = str(info.value)
        assert "hparams.ckpt" in message and "argparse.Namespace" in message and "allow_pickle=True" in message
        assert "OMLCORE_ALLOW_UNSAFE_PICKLE=1" in message and "add_safe_globals" in message
        _same_weights(from_pretrained("test_with_hparams", allow_pickle=True), served_zoo["test_mlp_head"])
        from_config = resolve("extractor", {"name": "pretrained", "args": {"name": entry.name, "allow_pickle": True}})
        _same_weights(from_config, served_zoo["test_mlp_head"])
        monkeypatch.setenv("OMLCORE_ALLOW_UNSAFE_PICKLE", "1")
        _same_weights(ExtractorWithMLP.from_pretrained("test_with_hparams"), served_zoo["test_mlp_head"])
    assert server.requests.count("/hparams.ckpt") == 1


def test_extra_pretrained_refuses_taken_names(served_zoo: dict[str, bytes]) -> None:
    entry = get_pretrained("test_small_cnn")
    with pytest.raises(ValueError, match="taken by test_small_cnn"), extra_pretrained(entry):
        pass
    with (
        pytest.raises(ValueError, match="taken by vits16_dino"),
        extra_pretrained(PretrainedModel("x", "vits16", (), "abcdef", "md5", "x.pth", aliases=("vits16_dino",))),
    ):
        pass
    with pytest.raises(ValueError, match="at least 6 hex digits"):
        PretrainedModel("y", "vits16", (), "abc", "md5", "y.pth")
    assert find_pretrained("x") is None and get_pretrained("vits16_dino").arch == "vits16"


def test_extra_pretrained_is_scoped_to_its_block() -> None:
    outer = PretrainedModel("outer", "vits16", (), "abcdef", "md5", "outer.pth")
    inner = PretrainedModel("inner", "resnet50", (), "abcdef", "md5", "inner.pth", aliases=("inner_alias",))
    builtin = list_pretrained()
    with extra_pretrained(outer):
        with extra_pretrained(inner):
            assert get_pretrained("inner_alias") is inner and find_pretrained("outer") is outer
            assert list_pretrained() == sorted([*builtin, "inner", "outer"])
            assert "inner" in list_pretrained(arch="resnet50") and "outer" not in list_pretrained(arch="resnet50")
        assert find_pretrained("inner") is None and find_pretrained("inner_alias") is None
    assert list_pretrained() == builtin
    with pytest.raises(RuntimeError), extra_pretrained(outer):
        raise RuntimeError
    assert find_pretrained("outer") is None


def test_the_builtin_zoo_is_a_constant_table() -> None:
    assert isinstance(BUILTIN_PRETRAINED, tuple) and list_pretrained() == sorted(m.name for m in BUILTIN_PRETRAINED)
    names = [name for model in BUILTIN_PRETRAINED for name in (model.name, *model.aliases)]
    assert len(names) == len(set(names))
    assert all(get_pretrained(model.name) is model for model in BUILTIN_PRETRAINED)


# The published zoo: names, hashes and reported numbers as OML 4.0, torchvision and OpenAI publish them.
OML_NAMES = [
    "vits16_dino",
    "vits8_dino",
    "vitb16_dino",
    "vitb8_dino",
    "vits16_inshop",
    "vits16_sop",
    "vits16_cub",
    "vits16_cars",
    "vits16_224_mlp_384_inshop",
    "resnet50_moco_v2",
    "resnet18_imagenet1k_v1",
    "resnet34_imagenet1k_v1",
    "resnet50_imagenet1k_v1",
    "resnet101_imagenet1k_v1",
    "resnet152_imagenet1k_v1",
    "openai_vitb32_224",
    "openai_vitb16_224",
    "openai_vitl14_224",
    "sber_vitb32_224",
    "sber_vitb16_224",
    "sber_vitl14_224",
]


def test_the_builtin_zoo_is_consistent() -> None:
    registry = get_registry()
    assert set(OML_NAMES) <= set(list_pretrained())
    assert {"resnet50_imagenet1k_v2", "resnet101_imagenet1k_v2", "resnet152_imagenet1k_v2"} <= set(list_pretrained())
    for name in list_pretrained():
        entry = get_pretrained(name)
        assert ("extractor", entry.arch) in registry and ("transform", entry.transform) in registry, name
        assert entry.urls and all(url.startswith("https://") for url in entry.urls), name
        assert all(0 < score < 1 for score in entry.cmc1.values()) and bool(entry.cmc1) == bool(entry.cmc1_source)
        for arg in entry.init_args:
            assert arg != "weights", name
    assert get_pretrained("vitb32_clip").name == "openai_vitb32_224"
    assert get_pretrained("vits16_dino").hash == "cf0f22" and get_pretrained("vits16_sop").init_args == {
        "normalise_features": True
    }
    assert get_pretrained("vits16_inshop").cmc1 == {"inshop": 0.921}
    assert get_pretrained("resnet50_imagenet1k_v1").urls == (
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    )
    openai = get_pretrained("openai_vitl14_224")
    assert openai.hash_algorithm == "sha256" and openai.hash in openai.urls[0] and openai.cmc1["cars"] == 0.844
    assert get_pretrained("resnet50_moco_v2").cmc1_source == OML_DOCS_ZOO_SOURCE
    assert get_pretrained("vits16_dino").cmc1_source == OML_DOCS_ZOO_SOURCE
    assert get_pretrained("vits16_sop").cmc1_source == OML_ZOO_SOURCE


@pytest.mark.parametrize("name", ["vits16_dino", "vits16_cars", "openai_vitb16_224", "resnet50_imagenet1k_v1"])
def test_each_zoo_model_names_its_preprocessing(name: str) -> None:
    transform = transforms_for_pretrained(name)
    assert isinstance(transform, Compose)
    tensor = transform(Image.new("RGB", (300, 200), (10, 20, 30)))
    assert tensor.shape == (3, 224, 224)
    normalize = next(t for t in transform.transforms if isinstance(t, Normalize))
    assert normalize.mean == (CLIP_MEAN if name.startswith("openai") else IMAGENET_MEAN)


def test_builtin_weights_are_not_fetched_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setenv("OMLCORE_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        ViTExtractor.from_pretrained("vits16_dino")
    message = str(info.value)
    assert "vits16_dino.ckpt" in message and "md5 must start with cf0f22" in message
    assert "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth" in message


def test_file_hash_matches_hashlib(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(payload(3_000_000))
    assert file_hash(tmp_path / "f") == sha256(payload(3_000_000))
    assert file_hash(tmp_path / "f", "md5") == hashlib.md5(payload(3_000_000)).hexdigest()
