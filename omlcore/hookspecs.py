"""Hook specifications of omlcore's plugin system (pluggy project name ``"omlcore"``).

A plugin is a module or object with functions marked ``@hookimpl`` whose names are the hooks below.
Third-party plugins are found through the ``omlcore`` entry-point group::

    # pyproject.toml of your package
    [project.entry-points.omlcore]
    myplugin = "my_package.omlcore_plugin"

    # my_package/omlcore_plugin.py
    from omlcore.hookspecs import hookimpl

    @hookimpl
    def register_losses(registry):
        registry.register("my.FancyLoss", "my_package.losses:FancyLoss", summary="my loss")

Every hook receives ``registry``, an :class:`omlcore.registry.Registrar` bound to the hook's kind and
to the calling plugin; call ``registry.register(name, target, requires=..., extra=..., summary=...,
override=...)`` once per component. ``target`` is a ``"package.module:attribute"`` string or a
zero-argument callable, so registering imports nothing heavy. Hooks return nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "omlcore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_samplers(registry: Registrar) -> None:
    """Register batch samplers: iterables of index batches (see omlcore.protocols.Sampler).

    Kind ``"sampler"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_miners(registry: Registrar) -> None:
    """Register miners: (embeddings, labels) -> Triplets | Pairs (see omlcore.protocols.Miner).

    Kind ``"miner"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_losses(registry: Registrar) -> None:
    """Register losses: (embeddings, labels) -> scalar tensor (see omlcore.protocols.Loss).

    Kind ``"loss"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_metrics(registry: Registrar) -> None:
    """Register metric accumulators: update / compute / reset, mergeable state (omlcore.protocols.MetricAccumulator).

    Kind ``"metric"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_extractors(registry: Registrar) -> None:
    """Register extractors: nn.Modules mapping images to (B, feat_dim) embeddings (see omlcore.protocols.Extractor).

    Kind ``"extractor"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_knn_backends(registry: Registrar) -> None:
    """Register kNN backends: exact or approximate top-k search (see omlcore.protocols.KNNBackend).

    Kind ``"knn_backend"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_postprocessors(registry: Registrar) -> None:
    """Register retrieval post-processors that re-rank the top-k of each query.

    Kind ``"postprocessor"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_transforms(registry: Registrar) -> None:
    """Register image transforms: factories returning a callable PIL.Image -> Tensor.

    Kind ``"transform"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_optimizers(registry: Registrar) -> None:
    """Register optimizers: factories called as factory(params, **args).

    Kind ``"optimizer"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_schedulers(registry: Registrar) -> None:
    """Register learning-rate schedulers: factories called as factory(optimizer, **args).

    Kind ``"scheduler"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_callbacks(registry: Registrar) -> None:
    """Register training-loop callbacks, built from the config's ``callbacks`` and handed to the runner.

    Kind ``"callback"``: ``registry.register(name, target, ...)`` per component. The torch runner takes
    ``omlcore_torch.callbacks.Callback`` objects, the Lightning runner Lightning's callbacks (and turns omlcore's
    ``early_stopping`` ... into Lightning's); a runner's ``check_callbacks`` rejects the others before the run.
    """


@hookspec
def register_loggers(registry: Registrar) -> None:
    """Register experiment loggers (CSV, TensorBoard, MLflow ...), chosen by the config's ``logger``.

    Kind ``"logger"``: ``registry.register(name, target, ...)`` per component. The factory gets the run folder first
    (``factory(run_dir, **args)``, in the primary process, once the folder exists) and returns an
    :class:`omlcore.tracking.ExperimentLogger`; pass ``requires`` / ``extra`` so that a missing client library is
    reported with its ``pip install`` before the run starts.
    """


@hookspec
def register_runners(registry: Registrar) -> None:
    """Register runners that drive training / validation in a framework (raw PyTorch, Lightning, ...).

    Kind ``"runner"``: ``registry.register(name, target, ...)`` per component.
    """


@hookspec
def register_checks(registry: Registrar) -> None:
    """Register construction-time checks of components a plugin knows (e.g. a framework's losses; see omlcore.checks).

    Kind ``"check"``: ``registry.register(name, target, ...)`` per check. The target is the check itself, a callable
    ``check(obj: object, role: str) -> None`` that raises :class:`omlcore.checks.IncompatibleComponentError` (naming
    ``obj``, the misfit and the fix) when ``obj`` does not fit ``role`` (``"loss"``, ``"miner"`` ...), and returns for
    objects and roles it does not know. :func:`omlcore.checks.check_loss` runs every check on a training loop's loss.
    """
