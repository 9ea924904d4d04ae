"""The ``omlcore`` command line: ``omlcore train | validate | predict CONFIG [key.sub=value ...]``, ``omlcore plugins``.

CONFIG is a YAML file or the name of a shipped config (``omlcore train glyphs``); see ``docs/config.md``. A persisted
search index: ``omlcore index build CONFIG out=<folder>``, ``omlcore index add <folder> data=...``, ``omlcore search
<folder> queries=...``; its explorer in the browser: ``omlcore serve <folder> [--run <validation run>]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from omlcore import __version__
from omlcore.errors import OmlcoreError, PluginLoadWarning, RunInterrupted
from omlcore.tracking import TrackingWarning

__all__ = ["main"]

_EPILOG = """\
documentation: docs/getting-started.md (the site: mkdocs build; every config key in docs/config.md)

plugin switches (environment variables):
  OMLCORE_DISABLE_PLUGINS=a,b        do not load these entry-point plugins
  OMLCORE_PLUGINS=a,b                load only these entry-point plugins
  OMLCORE_DISABLE_PLUGIN_AUTOLOAD=1  load no entry-point plugin except those in OMLCORE_PLUGINS
  OMLCORE_TRACE_PLUGINS=1            trace plugin loading and registration to stderr
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omlcore",
        description="omlcore: metric learning for PyTorch, validated by retrieval.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"omlcore {__version__}")
    _add_verbosity(parser, logging.INFO)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = commands.add_parser(
        "plugins",
        help="list plugins and every registered component, marking the unavailable ones and why",
        description="List plugins (with distribution and version) and every registered component by kind.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument("--kind", help="only components of this kind (e.g. loss, miner, transform)")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=_cmd_plugins)
    _add_index_parsers(commands)
    for name, summary in _PIPELINES.items():
        pipeline = commands.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. Every run writes into its own folder under output_dir.",
            epilog=_PIPELINE_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        pipeline.add_argument("config", help="a YAML config file, or a shipped config by name (e.g. glyphs)")
        pipeline.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config keys")
        _add_verbosity(pipeline, argparse.SUPPRESS)
        pipeline.set_defaults(handler=_cmd_pipeline, pipeline=name.replace("-", "_"))
    _add_export_parser(commands)
    _add_serve_parser(commands)
    return parser


_PIPELINES = {
    "train": "train an extractor, validating every epoch (checkpoints, resume, metrics, retrieval grids)",
    "validate": "validate an extractor (zoo, checkpoint or untrained) on a CSV: a metric table, JSON, grids",
    "predict": "embed a CSV or an image folder and write each item's nearest neighbours (JSON + CSV)",
    "train-reranker": "train a pairwise re-ranker on a trained extractor's hard pairs (metrics before / after it)",
}
_PIPELINE_EPILOG = """\
examples:
  omlcore train glyphs                                 the shipped main job
  omlcore train my.yaml runner.args.epochs=3 runner.name=lightning
  omlcore train my.yaml resume=runs/train-my-20260101-120000
  omlcore validate my.yaml checkpoint=runs/train-my-20260101-120000
  omlcore predict my.yaml predict.data=images/ checkpoint=runs/train-my-20260101-120000
  omlcore train-reranker glyphs_reranker checkpoint=runs/train-glyphs-20260101-120000

Overrides are YAML values (3, null, [1, 5], "{name: adam, args: {lr: 0.01}}"); every key is in docs/config.md.
"""


def _cmd_pipeline(args: argparse.Namespace) -> int:
    import importlib

    function = getattr(importlib.import_module(f"omlcore.pipelines.{args.pipeline}"), args.pipeline)
    function(args.config, args.overrides)
    return 0


_INDEX_EPILOG = """\
examples:
  omlcore index build my.yaml checkpoint=runs/train-my-20260101-120000 data=photos/ out=photos.index
  omlcore index build my.yaml out=gallery.index index.dtype=float16 "metric.args.knn_backend={name: faiss.ivf}"
  omlcore index add photos.index data=more-photos/
  omlcore search photos.index queries=query.jpg k=10
  omlcore search photos.index queries=queries.csv k=5 "postprocessor={name: aqe, args: {n: 2}}"

data=, out=, queries=, k= stand for index.data=, index.out=, search.queries=, search.k=; any other key.sub=value
overrides the config (for add and search: the one saved in the index, or --config). See docs/deployment.md and
docs/config.md.
"""


def _add_index_parsers(commands: Any) -> None:
    """``omlcore index build | add`` and ``omlcore search``."""
    formatter = argparse.RawDescriptionHelpFormatter
    index = commands.add_parser(
        "index",
        help="build a persisted search index of embedded items, or add items to one",
        description="Build a search index folder of embedded items (atomically), or add items to one.",
        epilog=_INDEX_EPILOG,
        formatter_class=formatter,
    )
    actions = index.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build", help="embed items and write an index folder", epilog=_INDEX_EPILOG, formatter_class=formatter
    )
    build.add_argument("config", help="a YAML config file, or a shipped config by name (e.g. glyphs)")
    add = actions.add_parser(
        "add", help="embed items with the index's model and add them", epilog=_INDEX_EPILOG, formatter_class=formatter
    )
    search = commands.add_parser(
        "search",
        help="the nearest items of an index for each query (JSON + CSV, retrieval grids)",
        description="Search an index folder: each query's nearest items into a run folder under output_dir.",
        epilog=_INDEX_EPILOG,
        formatter_class=formatter,
    )
    for parser, function in ((build, "build_index"), (add, "add_to_index"), (search, "search")):
        if parser is not build:
            parser.add_argument("index", help="the index folder")
            parser.add_argument("--config", help="the config that embeds (default: the one saved in the index)")
        parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config keys")
        _add_verbosity(parser, argparse.SUPPRESS)
        parser.set_defaults(handler=_cmd_index, function=function)


def _cmd_index(args: argparse.Namespace) -> int:
    from omlcore.pipelines import index as pipelines

    if args.function == "build_index":
        pipelines.build_index(args.config, args.overrides)
    else:
        getattr(pipelines, args.function)(args.index, args.overrides, args.config)
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from omlcore.plugins import get_plugin_manager
    from omlcore.registry import KINDS

    pm = get_plugin_manager()
    registry = pm.registry
    if args.kind is not None:
        registry.names(args.kind)  # raises, with the closest kinds, when the kind is unknown
    entries = registry.entries(kind=args.kind)
    plugins = sorted(pm.infos.values(), key=lambda info: (info.source != "builtin", info.name))
    if args.json:
        payload: dict[str, Any] = {
            "version": __version__,
            "plugins": [
                {
                    "name": info.name,
                    "source": info.source,
                    "module": info.module,
                    "distribution": info.distribution,
                    "version": info.version,
                    "status": info.status,
                    "available": info.available,
                    "detail": info.describe_status(),
                }
                for info in plugins
            ],
            "components": [
                {
                    "kind": entry.kind,
                    "name": entry.name,
                    "plugin": entry.plugin,
                    "available": entry.available,
                    "reason": entry.unavailable_reason,
                    "summary": entry.summary,
                }
                for entry in entries
            ],
        }
        print(json.dumps(payload, indent=2))
        return 0
    print(f"omlcore {__version__}\n\nPlugins:")
    _print_table(
        [
            (info.name, info.source, f"{info.distribution or '-'} {info.version or ''}".strip(), info.describe_status())
            for info in plugins
        ],
        ("NAME", "SOURCE", "DISTRIBUTION", "STATUS"),
    )
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        kind_entries = [entry for entry in entries if entry.kind == kind]
        print(f"\n{kind} ({len(kind_entries)}):" + ("" if kind_entries else " none registered"))
        _print_table(
            [
                (
                    entry.name,
                    entry.plugin,
                    "ok" if entry.available else "UNAVAILABLE",
                    entry.unavailable_reason or entry.summary,
                )
                for entry in kind_entries
            ]
        )
    return 0


def _print_table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] | None = None) -> None:
    table = [header, *rows] if header else list(rows)
    if not table:
        return
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  " + "  ".join([*cells, row[-1]]).rstrip())


_EXPORT_EPILOG = """\
examples:
  omlcore export vits16_dino                                 a zoo model -> vits16_dino.onnx
  omlcore export runs/train-glyphs-20260101-120000 -o glyphs.onnx
  omlcore export runs/train-glyphs-20260101-120000/checkpoints/best.pt --format torchscript
  omlcore export my_weights.pt --config my.yaml --input-size 224

The preprocessing (input size, mean / std) is recorded in the file's metadata: ONNX metadata_props, TorchScript
extra file omlcore.json; omlcore.export.read_metadata(path) reads both. See docs/deployment.md.
"""


def _add_export_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export an extractor (zoo name, run folder, checkpoint, config) to ONNX or TorchScript",
        description="Export an extractor with a dynamic batch size; its preprocessing goes into the file's metadata.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("source", help="a zoo name, a training run folder, a checkpoint file or a YAML config")
    export.add_argument("--format", default="onnx", metavar="{onnx,torchscript}", help="default: onnx")
    export.add_argument("-o", "--output", help="the file to write; default: <source name>.onnx / .torchscript.pt")
    export.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    export.add_argument("--config", help="the config that builds the extractor of a checkpoint file")
    export.add_argument(
        "--input-size",
        nargs="+",
        type=int,
        metavar="SIZE",
        help="a side, or height and width (default: the preprocessing's)",
    )
    export.add_argument("--no-check", action="store_true", help="skip comparing the file's embeddings with the model's")
    export.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from omlcore.export import export, read_metadata

    size = args.input_size
    if size is not None and len(size) not in (1, 2):
        raise OmlcoreError(f"--input-size takes a side or a height and a width, got {len(size)} numbers")
    input_size = None if size is None else (size[0], size[-1])
    result = export(
        args.source,
        args.output,
        args.format,
        config=args.config,
        input_size=input_size,
        overwrite=args.overwrite,
        check=not args.no_check,
    )
    checked = "" if result.max_abs_diff is None else f", max abs difference to the model {result.max_abs_diff:.2g}"
    print(f"{result.path} ({result.format}, {result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f} s{checked})")
    for key, value in read_metadata(result.path).items():
        print(f"  {key}: {value}")
    return 0


_SERVE_EPILOG = """\
examples:
  omlcore serve photos.index                                   http://127.0.0.1:8000/
  omlcore serve glyphs.index --run runs/validate-glyphs-20260101-120000 --port 8080

The run's validation items must be in the index (omlcore index build <run>/config.yaml checkpoint=... index.split=
validation out=...). The JSON API's schema: /openapi.json. Needs pip install "omlcore[serve]".
"""


def _add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="explore an index (and a validation run) in the browser: search by image or item, worst queries",
        description="A local web app over an index folder: search, rankings, postprocessors, a run's worst queries.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("index", help="the index folder (omlcore index build)")
    serve.add_argument("--run", help="a validation run folder (omlcore validate) of the index's items")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="default: 8000")
    serve.add_argument("--cache", help="the thumbnails' folder (default: under omlcore's cache folder)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="the largest image upload (default: 10)")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from omlcore.serve import serve

    max_bytes = int(args.max_upload_mb * 2**20)
    serve(args.index, args.run, host=args.host, port=args.port, cache=args.cache, max_upload_bytes=max_bytes)
    return 0


def _add_verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    """``-v/--verbose`` (debug messages too) and ``-q/--quiet`` (warnings and errors only)."""
    group = parser.add_mutually_exclusive_group()
    for flags, level, what in (
        (("-v", "--verbose"), logging.DEBUG, "debug messages too"),
        (("-q", "--quiet"), logging.WARNING, "warnings and errors only"),
    ):
        group.add_argument(*flags, dest="verbosity", action="store_const", const=level, default=default, help=what)


class _ConsoleHandler(logging.Handler):
    """omlcore's log records on the console, around tqdm's progress bars: warnings and errors to stderr
    (``warning: ...``), the rest to stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                tqdm.write(f"{record.levelname.lower()}: {message}", file=sys.stderr)
            else:
                tqdm.write(message, file=sys.stdout)
        except Exception:
            self.handleError(record)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning, shown when it is raised: omlcore's own (plugins, experiment loggers) as ``warning: <message>``."""
    from tqdm.auto import tqdm

    if issubclass(category, PluginLoadWarning | TrackingWarning):
        text = f"warning: {message}"
    else:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    tqdm.write(text, file=sys.stderr)


@contextlib.contextmanager
def _console(level: int) -> Iterator[None]:
    """While a command runs: the ``omlcore`` loggers printed from ``level`` on, and warnings shown as they happen."""
    logger = logging.getLogger("omlcore")
    handler, previous = _ConsoleHandler(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PluginLoadWarning)
            warnings.showwarning = _show_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or omlcore error, 130 interrupted by Ctrl-C)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    with _console(args.verbosity):
        try:
            status: int = args.handler(args)
        except OmlcoreError as error:
            status = 2
            print(f"error: {error}\n(see {error.docs})", file=sys.stderr)
        except KeyboardInterrupt as interrupted:
            status = 130  # as a shell reports a process ended by SIGINT
            if not isinstance(interrupted, RunInterrupted):  # a run has printed where it is and how to resume
                print("\ninterrupted", file=sys.stderr)
    return status
