"""The ``pml`` plugin registers every PML loss and miner; miners are wrapped to return Triplets / Pairs."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pluggy
import pytest
import torch

import omlcore_pml.plugin as pml_plugin
from omlcore import hookspecs
from omlcore.checks import IncompatibleComponentError, check_loss, run_checks
from omlcore.miners import HardTripletsMiner
from omlcore.plugins import get_registry, registry_of, reset_plugin_manager
from omlcore.protocols import Loss, Miner, Pairs, Triplets
from omlcore.registry import Registry
from omlcore_pml.checks import check_pml_object
from omlcore_pml.miners import PMLMiner
from omlcore_pml.names import PML_LOSSES, PML_MINERS

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

HINT = 'pip install "omlcore[pml]"'


def plugin_registry() -> Registry:
    return registry_of([("pml", pml_plugin)])


def is_stub(function: Callable[..., Any]) -> bool:
    """True for a method whose body (after any docstring) is only ``raise NotImplementedError``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return False
    body = tree.body[0].body if isinstance(tree.body[0], ast.FunctionDef) else []
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and "NotImplementedError" in ast.unparse(body[0].exc or ast.Constant(None))
    )


def concrete_pml_classes(module: Any, base: type) -> list[str]:
    """The subclasses of ``base`` that ``module`` exports, minus abstract bases (a PML method still a stub)."""
    names = []
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, base):
            continue
        methods = inspect.getmembers(cls, inspect.isfunction)
        pml_methods = [
            method for _, method in methods if (method.__module__ or "").startswith("pytorch_metric_learning")
        ]
        if not any(is_stub(method) for method in pml_methods):
            names.append(name)
    return sorted(names)


def test_static_names_equal_the_concrete_classes_pml_exports() -> None:
    assert list(PML_LOSSES) == concrete_pml_classes(pml_losses, pml_losses.BaseMetricLossFunction)
    assert list(PML_MINERS) == concrete_pml_classes(pml_miners, pml_miners.BaseMiner)
    # the stub detection leaves out exactly PML's abstract bases
    losses = {
        name
        for name, cls in inspect.getmembers(pml_losses, inspect.isclass)
        if issubclass(cls, pml_losses.BaseMetricLossFunction)
    }
    assert losses - set(PML_LOSSES) == {"BaseMetricLossFunction", "GenericPairLoss"}
    miners = {
        name for name, cls in inspect.getmembers(pml_miners, inspect.isclass) if issubclass(cls, pml_miners.BaseMiner)
    }
    assert miners - set(PML_MINERS) == {"BaseMiner"}


def test_hookimpls_match_the_hookspecs() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(pml_plugin, name="pml")
    manager.check_pending()  # every hookimpl is a known hook with the right argument names
    assert len(manager.hook.register_losses.get_hookimpls()) == 1
    assert len(manager.hook.register_miners.get_hookimpls()) == 1
    assert len(manager.hook.register_checks.get_hookimpls()) == 1


def test_registers_every_loss_and_miner() -> None:
    registry = plugin_registry()
    assert registry.names("loss") == sorted([f"pml.{name}" for name in PML_LOSSES] + ["pml.PMLLoss"])
    assert registry.names("miner") == sorted(f"pml.{name}" for name in PML_MINERS)
    assert registry.names("check") == ["pml.objects"]
    assert len(registry) == len(PML_LOSSES) + len(PML_MINERS) + 2
    assert registry.get("loss", "pml.PMLLoss").target == "omlcore_pml.losses:PMLLoss"
    assert registry.load("check", "pml.objects") is check_pml_object
    for entry in registry:
        assert entry.plugin == "pml"
        assert entry.requires == ("pytorch_metric_learning",)
        assert entry.extra == "pml"
        assert entry.available
        assert entry.summary and "\n" not in entry.summary
    for name in PML_LOSSES:
        entry = registry.get("loss", f"pml.{name}")
        assert entry.target == f"pytorch_metric_learning.losses:{name}"
        assert entry.load() is getattr(pml_losses, name)
    for name in PML_MINERS:
        factory = registry.load("miner", f"pml.{name}")
        assert inspect.signature(factory) == inspect.signature(getattr(pml_miners, name))


def test_the_loops_check_pml_objects_through_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    vicreg = pml_losses.VICRegLoss()
    with pytest.raises(IncompatibleComponentError, match="pytorch_metric_learning's VICRegLoss does not fit omlcore's"):
        check_loss(vicreg)  # the process-wide registry: the pml plugin is loaded
    with pytest.raises(IncompatibleComponentError, match="BatchHardMiner is a PML miner, not a loss"):
        check_loss(pml_miners.BatchHardMiner(), registry=plugin_registry())
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "pml")
    reset_plugin_manager()
    assert "pml.objects" not in get_registry().names("check")
    check_loss(vicreg)  # without the plugin nothing knows PML's losses: only being callable is checked


def test_the_pml_check_knows_its_roles_and_leaves_the_rest_alone() -> None:
    registry = plugin_registry()
    misfits = [
        (pml_losses.ContrastiveLoss(), "miner", "pytorch_metric_learning's ContrastiveLoss is a PML loss, not a miner"),
        (pml_distances.CosineSimilarity(), "miner", "CosineSimilarity is a PML distance, not a miner; pass it to"),
        (pml_distances.CosineSimilarity(), "loss", "CosineSimilarity is a PML distance, not a loss; pass it to"),
    ]
    for obj, role, message in misfits:
        with pytest.raises(IncompatibleComponentError, match=message):
            run_checks(obj, role, registry=registry)
    for obj, role in [
        (pml_miners.BatchHardMiner(), "miner"),
        (pml_losses.TripletMarginLoss(), "loss"),
        (pml_losses.VICRegLoss(), "sampler"),  # a role it does not know
        (HardTripletsMiner(), "loss"),  # not a PML object
        (42, "miner"),
    ]:
        run_checks(obj, role, registry=registry)


def batch(seed: int = 0, size: int = 24, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator), dim=1)
    labels = torch.arange(size) % 4
    return embeddings.requires_grad_(), labels


def test_loss_by_name_equals_pml() -> None:
    loss = plugin_registry().build("loss", "pml.TripletMarginLoss", margin=0.3)
    assert type(loss) is pml_losses.TripletMarginLoss
    assert isinstance(loss, Loss)
    embeddings, labels = batch()
    expected = pml_losses.TripletMarginLoss(margin=0.3)(embeddings, labels)
    value = loss(embeddings, labels)
    assert value.ndim == 0 and value.item() > 0
    torch.testing.assert_close(value, expected, rtol=0, atol=0)


MINERS = [
    ("MultiSimilarityMiner", {"epsilon": 0.2}, Pairs),
    ("BatchHardMiner", {}, Triplets),
    ("TripletMarginMiner", {"margin": 0.3, "type_of_triplets": "semihard"}, Triplets),
    ("PairMarginMiner", {"pos_margin": 0.1, "neg_margin": 0.9}, Pairs),
]


@pytest.mark.parametrize(("name", "args", "kind"), MINERS)
def test_wrapped_miner_equals_pml(name: str, args: dict[str, Any], kind: type) -> None:
    miner = plugin_registry().build("miner", f"pml.{name}", **args)
    reference = getattr(pml_miners, name)(**args)
    assert isinstance(miner, PMLMiner) and isinstance(miner, Miner)
    assert type(miner.miner) is type(reference)
    assert miner.miner in list(miner.modules())
    embeddings, labels = batch()

    mined = miner(embeddings, labels)
    expected = reference(embeddings, labels)
    assert type(mined) is kind
    assert len(mined) == len(expected)
    for got, want in zip(mined, expected, strict=True):
        assert torch.equal(got, want)
    assert not mined.is_empty()
    # PML's recorded statistics live on the wrapped miner
    count = "num_triplets" if kind is Triplets else "num_pos_pairs"
    assert getattr(miner.miner, count) == len(mined[0]) == getattr(reference, count)

    ref_emb, ref_labels = batch(seed=1, size=16)
    mined = miner(embeddings, labels, ref_emb, ref_labels)
    expected = reference(embeddings, labels, ref_emb, ref_labels)
    for got, want in zip(mined, expected, strict=True):
        assert torch.equal(got, want)
    assert int(mined[1].max()) < 16  # positives index the reference set


@pytest.mark.parametrize("name", PML_MINERS)
def test_every_miner_builds_with_defaults_and_equals_pml(name: str) -> None:
    miner = plugin_registry().build("miner", f"pml.{name}")
    reference = getattr(pml_miners, name)()
    assert miner.state_dict().keys() == {f"miner.{key}" for key in reference.state_dict()}
    embeddings, labels = batch()
    torch.manual_seed(0)  # some miners sample
    mined = miner(embeddings, labels)
    torch.manual_seed(0)
    expected = reference(embeddings, labels)
    assert type(mined) is (Triplets if len(expected) == 3 else Pairs)
    for got, want in zip(mined, expected, strict=True):
        assert torch.equal(got, want)


def test_loss_takes_the_wrapped_miners_indices() -> None:
    registry = plugin_registry()
    embeddings, labels = batch()
    for miner_name, loss_name in [("TripletMarginMiner", "TripletMarginLoss"), ("PairMarginMiner", "ContrastiveLoss")]:
        mined = registry.build("miner", f"pml.{miner_name}")(embeddings, labels)
        loss = registry.build("loss", f"pml.{loss_name}")(embeddings, labels, indices_tuple=mined)
        reference_tuple = getattr(pml_miners, miner_name)()(embeddings, labels)
        expected = getattr(pml_losses, loss_name)()(embeddings, labels, indices_tuple=reference_tuple)
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)
        (gradient,) = torch.autograd.grad(loss, embeddings)
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_miner_signature_is_checked() -> None:
    registry = plugin_registry()
    accepted = ", ".join(inspect.signature(pml_miners.TripletMarginMiner).parameters).replace(", kwargs", "")
    with pytest.raises(TypeError, match="too many positional arguments") as error:
        registry.build("miner", "pml.TripletMarginMiner", 0.2, "all", "extra")
    assert f"Accepted arguments: {accepted}" in str(error.value)
    # PML takes **kwargs everywhere, so a misspelt keyword reaches PML, which rejects it
    with pytest.raises(TypeError, match="marginn"):
        registry.build("miner", "pml.TripletMarginMiner", marginn=0.2)


def test_registering_and_listing_imports_no_framework(plugin_entries: Callable[..., Any]) -> None:
    result = plugin_entries("omlcore_pml.plugin", "pml")
    assert len(result["entries"]) == len(PML_LOSSES) + len(PML_MINERS) + 2 and result["heavy"] == []


def test_without_pml_entries_are_unavailable_with_the_install_hint(plugin_entries: Callable[..., Any]) -> None:
    direct = """
from omlcore_pml.miners import miner_factory
try:
    miner_factory("BatchHardMiner")
except MissingDependencyError as exc:
    extra = str(exc)
"""
    result = plugin_entries("omlcore_pml.plugin", "pml", hidden=("pytorch_metric_learning",), build=True, extra=direct)
    assert HINT in result["extra"] and "miner 'pml.BatchHardMiner'" in result["extra"]
    entries = result["entries"]
    names = [f"pml.{name}" for name in PML_LOSSES + PML_MINERS]
    assert sorted(entries) == sorted([*names, "pml.PMLLoss", "pml.objects"])
    for name, entry in entries.items():
        assert entry["available"] is False, name
        assert entry["reason"] == f"needs pytorch_metric_learning, not installed: {HINT}"
        assert entry["error"] is not None and HINT in entry["error"] and f"'{name}'" in entry["error"]
