"""Export to ONNX and TorchScript: parity of the real exported files (onnxruntime, torch.jit.load) with the model at two
batch sizes, the preprocessing in the files' metadata, every kind of source, and bad input."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from omlcore.cli import main
from omlcore.config import load_config
from omlcore.errors import MissingDependencyError
from omlcore.export import (
    METADATA_FILE,
    ExportError,
    ExportSourceError,
    OutputExistsError,
    UnsupportedFormatError,
    default_output,
    export,
    export_extractor,
    read_metadata,
)
from omlcore.models import PretrainedModel, SmallCNN, extra_pretrained, resnet18, transforms_for_pretrained, vits16
from omlcore.transforms import normalize, resize_normalize

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.13 deprecates torch.jit

TOLERANCE = 1e-4
BATCH_SIZES = (1, 4)  # neither is the traced batch size (2): the batch dimension must be dynamic

# architecture -> (random-init model, the preprocessing its zoo weights come with; no weights are downloaded)
ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "small_cnn": (lambda: SmallCNN(feat_dim=64, widths=(16, 32, 64)), lambda: resize_normalize(32)),
    "resnet18": (resnet18, lambda: transforms_for_pretrained("resnet18_imagenet1k_v1")),
    "vits16": (vits16, lambda: transforms_for_pretrained("vits16_dino")),
}


def needs_onnx() -> None:
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f'{module} is not installed (pip install "omlcore[export]")')


def images(transform: Any, batch: int, seed: int) -> torch.Tensor:
    """A batch of noise images of another size than the model's, through the model's preprocessing."""
    rng = np.random.default_rng(seed)
    pictures = [Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)) for _ in range(batch)]
    return torch.stack([transform(picture) for picture in pictures])


def run_file(path: Path, format: str, batch: torch.Tensor) -> torch.Tensor:
    """Embeddings of ``batch`` by the exported file, as a user runs it: onnxruntime, or torch.jit.load."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
    with torch.no_grad():
        return torch.jit.load(str(path))(batch)


def file_metadata(path: Path, format: str) -> dict[str, str]:
    """The metadata as onnx / torch.jit.load read it (not through omlcore)."""
    if format == "onnx":
        import onnx

        return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    loaded: dict[str, str] = json.loads(extra[METADATA_FILE])
    return loaded


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_exported_file_matches_the_model_at_two_batch_sizes(arch: str, format: str, tmp_path: Path) -> None:
    if format == "onnx":
        needs_onnx()
    build, preprocessing = ARCHS[arch]
    torch.manual_seed(0)
    model, transform = build().eval(), preprocessing()
    path = tmp_path / f"{arch}.{format}"
    result = export_extractor(model, path, format, transform=transform, source=f"random {arch}")
    assert result.path == path and path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    for seed, batch_size in enumerate(BATCH_SIZES):
        batch = images(transform, batch_size, seed)
        with torch.no_grad():
            expected = model(batch)
        got = run_file(path, format, batch)
        assert got.shape == expected.shape == (batch_size, model.feat_dim)
        difference = float((got - expected).abs().max())
        assert difference <= TOLERANCE, f"{arch} {format} batch {batch_size}: max abs difference {difference}"

    metadata = file_metadata(path, format)
    assert metadata == read_metadata(path) == result.metadata
    step = next(s for s in transform.transforms if type(s).__name__ == "Normalize")
    side = 32 if arch == "small_cnn" else 224
    assert json.loads(metadata["omlcore.mean"]) == list(step.mean)
    assert json.loads(metadata["omlcore.std"]) == list(step.std)
    assert json.loads(metadata["omlcore.input_size"]) == [side, side]
    assert metadata["omlcore.arch"] == arch and metadata["omlcore.feat_dim"] == str(model.feat_dim)
    assert metadata["omlcore.source"] == f"random {arch}" and metadata["omlcore.normalised"] == "false"
    assert f"(batch, 3, {side}, {side})" in metadata["omlcore.input"] and "Normalize" in metadata["omlcore.transform"]
    if format == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        dims = graph.input[0].type.tensor_type.shape.dim
        assert [graph.input[0].name, graph.output[0].name] == ["images", "embeddings"]
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, side, side]


@pytest.fixture
def run_folder(tmp_path: Path) -> tuple[Path, nn.Module]:
    """A training run folder as `omlcore train glyphs` leaves it (config.yaml, checkpoints/extractor.pt), with the
    model whose weights it holds."""
    run = tmp_path / "runs" / "train-glyphs-20260101-120000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(load_config("glyphs").to_yaml())
    torch.manual_seed(1)
    model = SmallCNN(feat_dim=64, widths=(16, 32, 64)).eval()
    with torch.no_grad():  # BatchNorm statistics a fresh model would not have
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), run / "checkpoints" / "extractor.pt")
    return run, model


def assert_same_embeddings(path: Path, model: nn.Module, side: int = 32) -> None:
    batch = images(resize_normalize(side), 3, seed=7)
    with torch.no_grad():
        expected = model(batch)
    assert float((run_file(path, "torchscript", batch) - expected).abs().max()) <= TOLERANCE


def test_a_run_folder_and_its_checkpoints_export_with_the_runs_config(
    run_folder: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    run, model = run_folder
    result = export(run, tmp_path / "run.pt", "torchscript")
    assert_same_embeddings(result.path, model)
    assert result.metadata["omlcore.source"] == str(run) and result.metadata["omlcore.input_size"] == "[32, 32]"

    (run / "checkpoints" / "extractor.pt").rename(run / "checkpoints" / "best.pt")
    result = export(run / "checkpoints" / "best.pt", tmp_path / "best.pt", "torchscript")
    assert_same_embeddings(result.path, model)

    elsewhere = (run / "checkpoints" / "best.pt").rename(tmp_path / "weights.pt")
    with pytest.raises(ExportSourceError, match=r"config it was trained with.*--config"):
        export(elsewhere, tmp_path / "weights.torchscript.pt", "torchscript")
    result = export(elsewhere, tmp_path / "weights.torchscript.pt", "torchscript", config=run / "config.yaml")
    assert_same_embeddings(result.path, model)
    with pytest.raises(ExportSourceError, match=r"has no .*extractor\.pt"):
        export(run, tmp_path / "again.pt", "torchscript")


def test_a_config_exports_its_extractor_with_its_checkpoint(run_folder: tuple[Path, nn.Module], tmp_path: Path) -> None:
    run, model = run_folder
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load((run / "config.yaml").read_text()), "checkpoint": str(run)}))
    result = export(config, tmp_path / "config.pt", "torchscript")
    assert_same_embeddings(result.path, model)
    assert result.metadata["omlcore.source"] == str(config)


def test_a_zoo_name_exports_the_zoo_weights_and_preprocessing(cache: Path, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = SmallCNN(feat_dim=16).eval()
    cache.mkdir(parents=True)
    torch.save(model.state_dict(), cache / "test_cnn.pt")  # in the cache already: nothing is downloaded
    digest = hashlib.sha256((cache / "test_cnn.pt").read_bytes()).hexdigest()
    entry = PretrainedModel(
        "test_cnn", "small_cnn", (), digest, "sha256", "test_cnn.pt", {"feat_dim": 16}, "resize_normalize", {"size": 48}
    )
    with extra_pretrained(entry):
        assert default_output("test_cnn", "torchscript") == Path("test_cnn.torchscript.pt")
        result = export("test_cnn", tmp_path / "zoo.pt", "torchscript")
        with pytest.raises(ExportSourceError, match="brings its own config"):
            export("test_cnn", tmp_path / "zoo2.pt", "torchscript", config="glyphs")
    assert_same_embeddings(result.path, model, side=48)
    assert result.metadata["omlcore.source"] == "zoo:test_cnn" and result.metadata["omlcore.input_size"] == "[48, 48]"


def test_unknown_sources_are_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ExportSourceError, match=r"'vits16_dinno' is neither a zoo name.*Did you mean: vits16_dino"):
        export("vits16_dinno", tmp_path / "x.onnx")
    with pytest.raises(ExportSourceError, match=r"No such file or folder: '.*missing\.pt'"):
        export(tmp_path / "missing.pt", tmp_path / "x.onnx")
    with pytest.raises(ExportSourceError, match=r"no config\.yaml and no .*extractor\.pt"):
        export(tmp_path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_an_unsupported_format_is_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedFormatError, match="'tflite'; choose one of: onnx, torchscript"):
        export_extractor(SmallCNN(), tmp_path / "x.tflite", "tflite", input_size=32)
    assert main(["export", "vits16_dino", "--format", "tflite", "-o", str(tmp_path / "x")]) == 2
    assert "error: Unsupported export format 'tflite'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_replaced_only_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.pt"
    path.write_bytes(b"a file of the user's")
    model = SmallCNN(feat_dim=8)
    with pytest.raises(OutputExistsError, match=r"exists; choose another path, or pass overwrite=True"):
        export_extractor(model, path, "torchscript", input_size=32)
    with pytest.raises(OutputExistsError, match="is a folder"):
        export_extractor(model, tmp_path, "torchscript", input_size=32)
    assert path.read_bytes() == b"a file of the user's"
    export_extractor(model, path, "torchscript", input_size=32, overwrite=True)
    assert read_metadata(path)["omlcore.input_size"] == "[32, 32]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.pt"]  # no temporary file left


def test_the_cli_exports_a_run_and_refuses_to_overwrite(
    run_folder: tuple[Path, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, model = run_folder
    out = tmp_path / "glyphs.pt"
    assert main(["export", str(run), "--format", "torchscript", "-o", str(out), "--input-size", "40"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out} (torchscript, ") and "max abs difference" in printed
    assert "omlcore.mean: [0.485, 0.456, 0.406]" in printed and "omlcore.input_size: [40, 40]" in printed
    assert_same_embeddings(out, model, side=40)
    before = out.read_bytes()
    assert main(["export", str(run), "--format", "torchscript", "-o", str(out)]) == 2
    assert "exists; choose another path, or pass overwrite=True (CLI: --overwrite)" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", str(run), "--format", "torchscript", "-o", str(out), "--overwrite"]) == 0
    assert read_metadata(out)["omlcore.input_size"] == "[32, 32]"


class Noisy(nn.Module):
    """A model that no file reproduces: it adds fresh noise to every output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.fc(images.mean(dim=(2, 3)))
        return embeddings + torch.rand_like(embeddings)


def test_a_file_that_does_not_reproduce_the_model_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "noisy.pt"
    path.write_bytes(b"previous export")
    with pytest.raises(ExportError, match=r"does not reproduce the model: max abs difference"):
        export_extractor(Noisy(), path, "torchscript", input_size=8, overwrite=True)
    assert path.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["noisy.pt"]
    result = export_extractor(Noisy(), path, "torchscript", input_size=8, overwrite=True, check=False)
    assert result.max_abs_diff is None and read_metadata(path)["omlcore.arch"] == "Noisy"


def test_a_model_in_another_dtype_is_exported_from_a_float32_copy(tmp_path: Path) -> None:
    model = SmallCNN(feat_dim=8).double().train()
    result = export_extractor(model, tmp_path / "x.pt", "torchscript", input_size=16)
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    assert model.training and all(p.dtype == torch.float64 for p in model.parameters())  # left as it was
    batch = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model.eval()(batch.double()).float()
    assert float((run_file(result.path, "torchscript", batch) - expected).abs().max()) <= TOLERANCE


def test_a_preprocessing_without_a_size_needs_an_input_size(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"keeps each image's own size; pass input_size=\(height, width\)"):
        export_extractor(SmallCNN(), tmp_path / "x.pt", "torchscript", transform=normalize())
    result = export_extractor(SmallCNN(), tmp_path / "x.pt", "torchscript", transform=normalize(), input_size=(24, 40))
    assert json.loads(result.metadata["omlcore.input_size"]) == [24, 40]


def test_onnx_without_the_export_extra_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"ONNX export needs .*pip install \"omlcore\[export\]\""):
        export_extractor(SmallCNN(), tmp_path / "x.onnx", "onnx", input_size=32)
    assert list(tmp_path.iterdir()) == []


def test_default_output_names(run_folder: tuple[Path, nn.Module]) -> None:
    run, _ = run_folder
    assert default_output(run, "onnx") == Path("train-glyphs-20260101-120000.onnx")
    assert default_output(run / "checkpoints" / "extractor.pt", "torchscript") == Path("extractor.torchscript.pt")
    assert default_output("vits16_dino", "onnx") == Path("vits16_dino.onnx")
