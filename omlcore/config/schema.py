"""The config schema: every key a config file may hold, its type, default and meaning.

A config is a YAML mapping. Plain keys hold values (``seed: 0``, ``dataset.csv: data/df.csv``); component keys
hold ``{name: <registry name>, args: {...}}`` resolved through the plugin registry (``omlcore plugins`` lists the
names). :data:`OPTIONS` is the single source of truth: validation, defaults and ``docs/config.md`` follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["OPTIONS", "PIPELINES", "SECTIONS", "Option", "Pipeline", "option"]

Pipeline = Literal["train", "validate", "predict", "train_reranker", "index", "search"]
#: The pipelines a config drives.
PIPELINES: tuple[Pipeline, ...] = ("train", "validate", "predict", "train_reranker", "index", "search")


@dataclass(frozen=True)
class Option:
    """One key of the schema.

    Attributes:
        key: dotted path (``"dataset.csv"``); a dot means the key sits in a section.
        types: the YAML value types accepted (``int`` also stands for ``float`` where ``float`` is listed).
        default: the value used when the key is absent (components: a ``{name, args}`` mapping or None).
        doc: one line for ``docs/config.md`` and error messages.
        kind: the registry kind for component keys (``{name, args}``), else None.
        choices: the accepted values, if limited.
        required: pipelines that need the key to be set (not None).
    """

    key: str
    types: tuple[type, ...]
    default: Any
    doc: str
    kind: str | None = None
    choices: tuple[Any, ...] | None = None
    required: tuple[Pipeline, ...] = ()


def _component(key: str, kind: str, default: Any, doc: str, required: tuple[Pipeline, ...] = ()) -> Option:
    """A ``{name, args}`` key; null is allowed where there is no default (the required ones say when they are)."""
    types: tuple[type, ...] = (dict,) if default is not None else (dict, type(None))
    return Option(key, types, default, doc, kind=kind, required=required)


_NONE = type(None)

OPTIONS: tuple[Option, ...] = (
    Option("seed", (int,), 0, "seed of Python's, numpy's and torch's random generators (model init, sampling)"),
    Option("output_dir", (str,), "runs", "folder that holds one sub-folder per run"),
    Option("run_name", (str, _NONE), None, "name of the run folder; default `<pipeline>-<config name>-<time>`"),
    Option(
        "resume",
        (str, _NONE),
        None,
        "train: a run folder to continue in (its `checkpoints/`), or a checkpoint file to continue from",
    ),
    Option(
        "checkpoint",
        (str, _NONE),
        None,
        "extractor weights to load: a run folder, its `checkpoints/extractor.pt`, a torch or Lightning checkpoint",
        required=("train_reranker",),
    ),
    Option("validate_untrained", (bool,), True, "train: validate (and print) the model before training too"),
    Option(
        "metric_for_checkpointing",
        (str, _NONE),
        "OVERALL/cmc/1",
        "train: keep the extractor of the epoch with the best value of this validation metric (`checkpoints/best.pt`)",
    ),
    Option(
        "mode_for_checkpointing",
        (str,),
        "max",
        "train: `max` if larger values of `metric_for_checkpointing` are better, `min` if smaller ones are",
        choices=("max", "min"),
    ),
    Option(
        "dataset.builtin",
        (str, _NONE),
        None,
        "a dataset shipped with omlcore, materialised on first use (`glyphs`); or set `dataset.csv`",
        choices=("glyphs", None),
    ),
    Option("dataset.csv", (str, _NONE), None, "a CSV file in OML's format (columns: label, path, split, ...)"),
    Option("dataset.root", (str, _NONE), None, "folder that relative image paths start from; default: the CSV's"),
    Option(
        "dataset.check_images",
        (str,),
        "exists",
        "how much of the image files to check up front",
        choices=("none", "exists", "decode"),
    ),
    Option("dataset.batch_size", (int,), 128, "batch size of validation and inference"),
    Option("dataset.num_workers", (int,), 0, "DataLoader worker processes"),
    _component(
        "transforms_train",
        "transform",
        {"name": "resize_normalize", "args": {}},
        "train: image transform (PIL -> tensor)",
    ),
    _component(
        "transforms_val", "transform", {"name": "resize_normalize", "args": {}}, "validation / inference transform"
    ),
    _component("extractor", "extractor", None, "the model: images -> embeddings", required=PIPELINES),
    _component("sampler", "sampler", None, "train: batch sampler; gets the train labels first", required=("train",)),
    _component("loss", "loss", None, "train: the loss (nest a miner as `args.miner`)", required=("train",)),
    _component(
        "optimizer", "optimizer", {"name": "adam", "args": {"lr": 0.001}}, "train: gets the trainable parameters first"
    ),
    _component("scheduler", "scheduler", None, "train: learning-rate scheduler (optional); gets the optimizer first"),
    _component(
        "metric",
        "metric",
        {"name": "embedding_metrics", "args": {"cmc_top_k": [1, 5], "precision_top_k": [5], "map_top_k": [5]}},
        "train, validate: the retrieval metrics",
    ),
    Option(
        "postprocessor",
        (dict, list, _NONE),
        None,
        "validate, predict, train's validation: re-rank the neighbours (`{name: aqe, args: {n: 2}}` or a list, applied "
        "in order); the metrics are then reported before and after (`postprocessed/OVERALL/cmc/1`)",
        kind="postprocessor",
    ),
    Option(
        "logger",
        (dict, list, _NONE),
        {"name": "csv", "args": {}},
        "train, validate: experiment logger(s): `csv`, `tensorboard`, `mlflow`, `wandb` ...; one or a list; null: none",
        kind="logger",
    ),
    Option(
        "callbacks",
        (list, _NONE),
        None,
        "train: training callbacks (`early_stopping`, `top_k_checkpoints`, `lr_monitor`, `freeze_backbone` ...)",
        kind="callback",
    ),
    _component(
        "runner",
        "runner",
        {"name": "torch", "args": {}},
        "the framework that runs the loops: `torch` or `lightning` (args: epochs, devices, precision ...)",
    ),
    Option("visualization.n_queries", (int,), 8, "worst queries drawn per metric (0: none)"),
    Option("visualization.top_k", (int,), 5, "neighbours shown per query"),
    Option(
        "visualization.formats",
        (list, _NONE),
        None,
        "`[html]`, `[png]` or both; default: HTML, plus PNG when matplotlib is installed",
    ),
    Option("predict.data", (str, _NONE), None, "predict: a CSV in OML's format or an image folder; default: dataset"),
    Option(
        "predict.split",
        (str, _NONE),
        None,
        "predict: only the CSV rows of this split",
        choices=("train", "validation", None),
    ),
    Option("predict.top_k", (int,), 5, "predict: nearest neighbours written per item"),
    Option(
        "predict.strict",
        (bool,),
        False,
        "predict: an unreadable file of an image folder stops the run (default: it is listed and left out)",
    ),
    Option(
        "index.data",
        (str, _NONE),
        None,
        "index build / add (`data=`): a CSV in OML's format, an image folder or one image; build's default: dataset",
    ),
    Option(
        "index.split",
        (str, _NONE),
        None,
        "index build / add: only the CSV rows of this split",
        choices=("train", "validation", None),
    ),
    Option("index.out", (str, _NONE), None, "index build (`out=`): the index folder to write"),
    Option(
        "index.dtype",
        (str,),
        "float32",
        "index build: how the embeddings are stored (`float16` halves the files)",
        choices=("float32", "float16"),
    ),
    Option("index.overwrite", (bool,), False, "index build: replace an existing index folder"),
    Option(
        "index.strict",
        (bool,),
        False,
        "index build / add: an unreadable image of a folder stops the build (default: it is named and left out)",
    ),
    Option(
        "search.queries", (str, _NONE), None, "search (`queries=`): a CSV in OML's format, an image folder or one image"
    ),
    Option(
        "search.split",
        (str, _NONE),
        None,
        "search: only the CSV rows of this split",
        choices=("train", "validation", None),
    ),
    Option("search.k", (int,), 10, "search (`k=`): nearest index items written per query"),
    Option(
        "search.strict",
        (bool,),
        False,
        "search: an unreadable query image stops the search (default: it is named and the others are searched)",
    ),
    _component(
        "reranker.model",
        "extractor",
        None,
        "train-reranker: the pairwise model (`pairwise_concat`, `pairwise_features`) trained on top of the extractor",
        required=("train_reranker",),
    ),
    Option("reranker.top_n", (int,), 5, "train-reranker: items re-scored per query by the validation's re-ranker"),
    Option(
        "reranker.mine_top_n",
        (int, _NONE),
        None,
        "train-reranker: nearest others paired with each training image (positives, hard negatives); null: top_n",
    ),
    Option(
        "reranker.balance_pairs",
        (bool,),
        True,
        "train-reranker: as many positive as negative pairs (the larger class subsampled, seeded); false: all pairs",
    ),
    Option("reranker.batch_size", (int,), 64, "train-reranker: pairs per training batch"),
    Option(
        "reranker.backbone_from_checkpoint",
        (bool,),
        False,
        "train-reranker: start the pairwise model's backbone from the `checkpoint` weights (same architecture)",
    ),
    Option(
        "reranker.embeddings_cache",
        (str, _NONE),
        None,
        "train-reranker: folder of the cached training embeddings; null: the run folder's `cache/`",
    ),
)

#: Keys that hold a mapping of options.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(o.key.split(".")[0] for o in OPTIONS if "." in o.key))


def option(key: str) -> Option:
    """The option with dotted ``key``."""
    for candidate in OPTIONS:
        if candidate.key == key:
            return candidate
    raise KeyError(key)
