"""Export an extractor to ONNX or TorchScript, for use outside Python or without omlcore.

>>> result = export("runs/train-glyphs-20260101-120000", "glyphs.onnx")   # doctest: +SKIP
>>> read_metadata("glyphs.onnx")["omlcore.mean"]                          # doctest: +SKIP
'[0.485, 0.456, 0.406]'

The exported model maps float32 images ``(batch, channels, height, width)`` (input ``images``) to embeddings
``(batch, feat_dim)`` (output ``embeddings``); the batch size is dynamic, the image size is the one the
preprocessing produces. The preprocessing itself is not in the graph: it is recorded as metadata (ONNX
``metadata_props``; TorchScript: the extra file ``omlcore.json``), see :data:`METADATA_KEYS`. ONNX export needs
``pip install "omlcore[export]"`` (onnx, onnxruntime, onnxscript); TorchScript needs torch only.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from omlcore import __version__
from omlcore.config import Config, build_component, load_config
from omlcore.errors import OmlcoreError
from omlcore.models import from_pretrained, get_pretrained, list_pretrained, transforms_for_pretrained
from omlcore.models.catalog import find_pretrained
from omlcore.pipelines.common import (
    CHECKPOINTS,
    EXTRACTOR_CHECKPOINT,
    ConfigSource,
    build_runner,
    config_files,
    load_extractor,
    write_atomically,
)
from omlcore.transforms import CenterCrop, Compose, LetterBox, Normalize, Resize, ResizeShorterSide
from omlcore.utils.optional import require

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "METADATA_KEYS",
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "ExportSourceError",
    "OutputExistsError",
    "Preprocessing",
    "UnsupportedFormatError",
    "default_output",
    "export",
    "export_extractor",
    "read_metadata",
]

ExportFormat = Literal["onnx", "torchscript"]
#: The formats :func:`export` writes.
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
#: The file-name ending :func:`default_output` gives each format.
_SUFFIXES: dict[ExportFormat, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: The extra file of a TorchScript archive that holds the metadata (JSON, the same keys as ONNX's metadata_props).
METADATA_FILE = "omlcore.json"
#: Every metadata key an exported file carries; values are strings (JSON for lists, numbers and booleans).
METADATA_KEYS: Mapping[str, str] = {
    "omlcore.version": "the omlcore version that wrote the file",
    "omlcore.source": "what was exported: a zoo name, a run folder, a checkpoint file or a config",
    "omlcore.arch": "the extractor's architecture (registered name, e.g. vits16) or class name",
    "omlcore.input": "the input, in words: name, dtype, shape, how pixels become values",
    "omlcore.input_size": "[height, width] of the images the model takes",
    "omlcore.mean": "per-channel mean subtracted from pixel / 255 (JSON list), or null without normalisation",
    "omlcore.std": "per-channel std that divides it (JSON list), or null",
    "omlcore.transform": "omlcore's preprocessing (resize, crop, normalise) as it prints itself",
    "omlcore.feat_dim": "size of an embedding",
    "omlcore.normalised": "true when the embeddings are L2-normalised in the model (null: unknown)",
}
_EXAMPLE_BATCH = 2  # batch sizes 0 and 1 are specialised by torch.export; 2 keeps the batch dimension dynamic
_CHECK_BATCH = 3  # another batch size than the traced one, so the check proves the batch dimension is dynamic
_CHECK_TOLERANCE = 1e-4
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar", ".yaml", ".yml")


class ExportError(OmlcoreError):
    """An extractor cannot be exported as asked; the message says why and what to do."""


class ExportSourceError(ExportError, FileNotFoundError):
    """The source is neither a zoo name, a run folder, a checkpoint file nor a config (or lacks its extractor)."""


class UnsupportedFormatError(ExportError, ValueError):
    """The export format is not one of :data:`FORMATS`."""


class OutputExistsError(ExportError, FileExistsError):
    """The output file exists and ``overwrite`` was not given."""


@dataclass(frozen=True)
class Preprocessing:
    """What an omlcore transform does to an image before the model sees it, as far as an exported file records it.

    Attributes:
        input_size: ``(height, width)`` of the transform's output, or None when it keeps each image's own size.
        mean: per-channel mean subtracted from ``pixel / 255``, or None without :class:`~omlcore.transforms.Normalize`.
        std: per-channel std that divides the result, or None.
        description: the transform as it prints itself (its steps and their arguments).
    """

    input_size: tuple[int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str

    @classmethod
    def of(cls, transform: Callable[[Any], Any] | None) -> Preprocessing:
        """Read the output size and normalisation off ``transform`` (a :class:`~omlcore.transforms.Compose` of
        omlcore's transforms; other callables are only described)."""
        if transform is None:
            return cls(None, None, None, "none: the caller prepares the image tensors")
        size: tuple[int, int] | None = None
        mean = std = None
        for step in _steps(transform):
            if isinstance(step, Resize | CenterCrop):
                size = step.size
            elif isinstance(step, LetterBox):
                size = (step.size, step.size)
            elif isinstance(step, ResizeShorterSide):
                size = None
            elif isinstance(step, Normalize):
                mean, std = step.mean, step.std
        return cls(size, mean, std, " ".join(repr(transform).split()).replace("[ ", "[").replace(", ]", "]"))

    @property
    def channels(self) -> int:
        """Channels of the input images: one per normalisation statistic, else 3 (RGB)."""
        return len(self.mean) if self.mean is not None else 3


def _steps(transform: Any) -> Iterator[Any]:
    if isinstance(transform, Compose):
        for step in transform.transforms:
            yield from _steps(step)
    else:
        yield transform


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` and :func:`export_extractor` wrote.

    Attributes:
        path: the exported file.
        format: ``"onnx"`` or ``"torchscript"``.
        metadata: the metadata recorded in the file (see :data:`METADATA_KEYS`).
        seconds: time spent exporting (and checking).
        max_abs_diff: the largest absolute difference between the file's and the model's embeddings on a random
            batch of another size than the traced one, or None when not checked.
    """

    path: Path
    format: ExportFormat
    metadata: dict[str, str]
    seconds: float
    max_abs_diff: float | None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def _check_format(format: str) -> ExportFormat:
    if format not in FORMATS:
        raise UnsupportedFormatError(f"Unsupported export format {format!r}; choose one of: {', '.join(FORMATS)}")
    return format


def _check_output(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise OutputExistsError(f"The output '{path}' is a folder; name a file, e.g. '{path / 'model.onnx'}'")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"The output '{path}' exists; choose another path, or pass overwrite=True (CLI: --overwrite) to replace it"
        )


def export_extractor(
    model: nn.Module,
    path: str | os.PathLike[str],
    format: str = "onnx",
    *,
    transform: Callable[[Any], Any] | None = None,
    input_size: int | tuple[int, int] | None = None,
    source: str = "",
    overwrite: bool = False,
    check: bool = True,
) -> ExportResult:
    """Export ``model`` (images -> embeddings) to ``path`` with a dynamic batch size, its preprocessing in the metadata.

    The file is written atomically (a temporary file, then a rename), and only after ``check``: the file is loaded
    (onnxruntime / ``torch.jit.load``) and its embeddings of a random batch must match the model's within
    ``1e-4 * (1 + max |embedding value|)``.

    Args:
        model: the extractor; it is exported in eval mode from the CPU in float32 (a model on another device or in
            another dtype is copied; the train / eval mode of the caller's model is restored).
        path: the file to write; an existing file is replaced only with ``overwrite=True``.
        format: ``"onnx"`` (needs ``omlcore[export]``) or ``"torchscript"``.
        transform: the preprocessing that goes with the model (``transforms_val`` of its config, or
            :func:`~omlcore.models.transforms_for_pretrained`): recorded in the metadata, and its output size is
            the exported input size.
        input_size: ``(height, width)`` (or a square side) of the input; default: the ``transform``'s output size.
        source: what the model came from, recorded as ``omlcore.source``.
        overwrite: replace an existing ``path``.
        check: compare the exported file's embeddings with the model's before the file is put in place.

    Raises:
        UnsupportedFormatError: ``format`` is not one of :data:`FORMATS`.
        OutputExistsError: ``path`` exists and ``overwrite`` is False, or is a folder.
        ExportError: no input size is known, or the exported file does not reproduce the model.
        MissingDependencyError: ONNX export without ``omlcore[export]`` installed.
    """
    fmt = _check_format(format)
    output = Path(path)
    _check_output(output, overwrite)
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", *(("onnxruntime",) if check else ())):
            require(module, "export", what="ONNX export")
    preprocessing = Preprocessing.of(transform)
    size = (input_size, input_size) if isinstance(input_size, int) else input_size or preprocessing.input_size
    if size is None:
        raise ExportError(
            f"No input size: the preprocessing ({preprocessing.description}) keeps each image's own size; "
            "pass input_size=(height, width) (CLI: --input-size H W)"
        )
    height, width = (int(side) for side in size)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
        model = copy.deepcopy(model).to("cpu", torch.float32)  # the caller's model stays where it is
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(_EXAMPLE_BATCH, preprocessing.channels, height, width, generator=generator)
    probe = torch.randn(_CHECK_BATCH, *example.shape[1:], generator=generator)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with torch.no_grad():
            expected = model(probe)
        metadata = _metadata(model, preprocessing, (height, width), source, expected)
        diffs: list[float] = []

        def write(temporary: Path) -> None:
            _WRITERS[fmt](model, example, temporary, metadata)
            if check:
                diffs.append(_max_abs_diff(fmt, temporary, probe, expected))
            if output.exists() and not overwrite:  # appeared while exporting: still never replaced silently
                _check_output(output, overwrite)

        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output, write)
    finally:
        model.train(was_training)
    return ExportResult(output, fmt, metadata, time.perf_counter() - started, diffs[0] if diffs else None)


def _metadata(
    model: nn.Module, preprocessing: Preprocessing, size: tuple[int, int], source: str, embeddings: Tensor
) -> dict[str, str]:
    normalised = getattr(model, "normalise_features", None)
    shape = f"(batch, {preprocessing.channels}, {size[0]}, {size[1]})"
    if preprocessing.mean is None:
        values = "prepared as omlcore.transform describes (no normalisation recorded)"
    else:
        values = "RGB pixels / 255, then (x - mean) / std per channel"
    return {
        "omlcore.version": __version__,
        "omlcore.source": source,
        "omlcore.arch": str(getattr(model, "arch", type(model).__name__)),
        "omlcore.input": f"images: float32 {shape}, {values}",
        "omlcore.input_size": json.dumps(list(size)),
        "omlcore.mean": json.dumps(list(preprocessing.mean) if preprocessing.mean is not None else None),
        "omlcore.std": json.dumps(list(preprocessing.std) if preprocessing.std is not None else None),
        "omlcore.transform": preprocessing.description,
        "omlcore.feat_dim": str(embeddings.shape[-1]),
        "omlcore.normalised": json.dumps(normalised if isinstance(normalised, bool) else None),
    }


def _write_onnx(model: nn.Module, example: Tensor, path: Path, metadata: Mapping[str, str]) -> None:
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    if program is None:  # only the legacy exporter (dynamo=False) writes no program
        raise ExportError("torch.onnx.export returned no ONNX program")
    program.model.metadata_props.update(metadata)
    program.model.doc_string = f"omlcore extractor: images -> embeddings ({metadata['omlcore.source']})"
    program.save(path, external_data=False)


def _write_torchscript(model: nn.Module, example: Tensor, path: Path, metadata: Mapping[str, str]) -> None:
    with warnings.catch_warnings():  # the image size is fixed on purpose; the batch size stays dynamic (checked)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(dict(metadata), indent=2)})


_WRITERS: dict[ExportFormat, Callable[[nn.Module, Tensor, Path, Mapping[str, str]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
}


def _max_abs_diff(format: ExportFormat, path: Path, images: Tensor, expected: Tensor) -> float:
    """The largest absolute difference between the embeddings of the file at ``path`` and ``expected``."""
    if format == "onnx":
        ort = require("onnxruntime", "export", what="checking an ONNX export")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["embeddings"], {"images": images.numpy()})[0])
    else:
        with torch.no_grad():
            got = torch.jit.load(str(path))(images)
    if got.shape != expected.shape:
        raise ExportError(
            f"The exported model gives embeddings of shape {tuple(got.shape)}, the model {tuple(expected.shape)}"
        )
    diff = float((got - expected).abs().max())
    if not diff <= _CHECK_TOLERANCE * (1.0 + float(expected.abs().max())):
        raise ExportError(
            f"The exported {format} file does not reproduce the model: max abs difference {diff:.3g} on a batch of "
            f"{images.shape[0]}; nothing was written (check=False writes it anyway)"
        )
    return diff


def default_output(source: str | os.PathLike[str], format: str) -> Path:
    """``<name><suffix>`` in the working folder: the zoo name, run folder or checkpoint file's stem, ``.onnx`` or
    ``.torchscript.pt``."""
    name = Path(source).name
    stem = name if Path(source).is_dir() or find_pretrained(str(source)) else Path(name).stem
    return Path(stem + _SUFFIXES[_check_format(format)])


def export(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    format: str = "onnx",
    *,
    config: ConfigSource | None = None,
    input_size: int | tuple[int, int] | None = None,
    overwrite: bool = False,
    check: bool = True,
) -> ExportResult:
    """Export the extractor of ``source`` with its preprocessing (see :func:`export_extractor`).

    Args:
        source: a zoo name (``vits16_dino``: weights and preprocessing of the zoo entry); a training run folder (its
            ``checkpoints/extractor.pt``, with the run's config); a checkpoint file (``extractor.pt``, ``best.pt``, a
            Lightning ``.ckpt``; its run's config when it lies in ``<run>/checkpoints/``, else ``config``); or a
            YAML config (its extractor, with its ``checkpoint`` if set). The preprocessing is the config's
            ``transforms_val``.
        path: the file to write; default :func:`default_output`.
        format: ``"onnx"`` or ``"torchscript"``.
        config: the config that builds the extractor of a checkpoint (a YAML file, a shipped config name, a
            mapping); it replaces a run folder's own config.
        input_size, overwrite, check: as in :func:`export_extractor`.

    Raises:
        ExportSourceError: an unknown zoo name, a missing file or folder, or a checkpoint without a config.
        ConfigError: the config is invalid, or the checkpoint does not fit its extractor.
        UnsupportedFormatError, OutputExistsError, ExportError: as in :func:`export_extractor`.
    """
    _check_format(format)
    output = Path(path) if path is not None else default_output(source, format)
    _check_output(output, overwrite)  # before anything heavy is loaded
    model, transform, described = _load(source, config)
    return export_extractor(
        model,
        output,
        format,
        transform=transform,
        input_size=input_size,
        source=described,
        overwrite=overwrite,
        check=check,
    )


def _load(source: str | os.PathLike[str], config: ConfigSource | None) -> tuple[nn.Module, Any, str]:
    """The extractor of ``source``, its preprocessing and how the metadata names the source."""
    text = os.fspath(source)
    location = Path(text)
    if location.is_dir():
        weights = location / CHECKPOINTS / EXTRACTOR_CHECKPOINT
        configs = config_files(location)
        missing = [
            name
            for name, there in (("config.yaml", bool(configs) or config is not None), (str(weights), weights.is_file()))
            if not there
        ]
        if missing:
            raise ExportSourceError(
                f"'{location}' is not a training run folder: it has no {' and no '.join(missing)}; pass a run folder "
                "of `omlcore train`, a checkpoint file (with config=, CLI --config), a YAML config or a zoo name"
            )
        return _from_config(config if config is not None else configs[-1], weights, text)
    if location.is_file():
        if location.suffix in (".yaml", ".yml"):
            if config is not None:
                raise ExportSourceError(f"'{location}' is a config itself; drop config= (--config)")
            return _from_config(location, None, text)
        run_configs = config_files(location.parent.parent) if location.parent.name == CHECKPOINTS else []
        if config is None and not run_configs:
            raise ExportSourceError(
                f"Cannot tell which extractor '{location}' holds: it is not in a run folder's {CHECKPOINTS}/ (with "
                f"the run's config.yaml); pass the config it was trained with: config= (CLI: --config my.yaml)"
            )
        return _from_config(config if config is not None else run_configs[-1], location, text)
    if find_pretrained(text) is not None:
        if config is not None:
            raise ExportSourceError(f"'{text}' is a zoo model, which brings its own config; drop config= (--config)")
        entry = get_pretrained(text)
        return from_pretrained(text), transforms_for_pretrained(text), f"zoo:{entry.name}"
    if os.sep in text or "/" in text or location.suffix in _CHECKPOINT_SUFFIXES:
        raise ExportSourceError(f"No such file or folder: '{text}'; pass a run folder, a checkpoint file or a config")
    close = difflib.get_close_matches(text, list_pretrained(), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ExportSourceError(
        f"'{text}' is neither a zoo name nor a file or folder.{hint} omlcore.models.list_pretrained() lists the "
        "zoo; a run folder, a checkpoint file or a YAML config works too"
    )


def _from_config(config: ConfigSource, checkpoint: Path | None, source: str) -> tuple[nn.Module, Any, str]:
    loaded = config if isinstance(config, Config) else load_config(config, pipeline="validate")
    if checkpoint is not None:
        loaded = dataclasses.replace(loaded, data={**loaded.data, "checkpoint": str(checkpoint)})
    origin = str(loaded.source) if loaded.source is not None else None
    model = load_extractor(loaded, build_runner(loaded))
    transform = build_component("transform", loaded["transforms_val"], "transforms_val", source=origin)
    return model, transform, source


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of an exported file (ONNX or TorchScript), read without running the model or any code of it."""
    file = Path(path)
    if zipfile.is_zipfile(file):  # a TorchScript archive: <root>/extra/omlcore.json
        with zipfile.ZipFile(file) as archive:
            records = [name for name in archive.namelist() if name.endswith(f"/extra/{METADATA_FILE}")]
            if not records:
                raise ExportError(f"'{file}' is a TorchScript archive without omlcore metadata ({METADATA_FILE})")
            loaded: dict[str, str] = json.loads(archive.read(records[0]))
            return loaded
    onnx = require("onnx", "export", what="reading ONNX metadata")
    model = onnx.load(str(file), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
