"""Registry: lazy entries, duplicates and overrides, lookups with suggestions, config building."""

from __future__ import annotations

import sys

import pytest

from omlcore.errors import DuplicateComponentError, MissingDependencyError, UnknownComponentError
from omlcore.registry import KINDS, Entry, Registrar, Registry


def make_registry(*entries: tuple[str, str, str, str]) -> Registry:
    registry = Registry()
    for kind, name, target, plugin in entries:
        registry.registrar(kind, plugin).register(name, target)
    return registry


def test_every_kind_has_a_hookspec() -> None:
    from omlcore import hookspecs

    for kind, hook_name in KINDS.items():
        spec = getattr(hookspecs, hook_name)
        assert spec.__doc__ and f'"{kind}"' in spec.__doc__, hook_name
    declared = {name for name in vars(hookspecs) if name.startswith("register_")}
    assert declared == set(KINDS.values())


def test_registering_imports_nothing() -> None:
    registry = make_registry(("loss", "lazy", "omlcore_module_never_imported:Thing", "p"))
    assert ("loss", "lazy") in registry and "omlcore_module_never_imported" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        registry.load("loss", "lazy")


def test_build_resolves_dotted_attribute_and_callable_targets() -> None:
    registry = Registry()
    registrar = registry.registrar("optimizer", "p")
    registrar.register("ordered", "collections:OrderedDict")
    registrar.register("join", "os.path:join")
    registrar.register("fromkeys", "collections:OrderedDict.fromkeys")
    registrar.register("via_callable", lambda: dict)
    assert registry.build("optimizer", "ordered", a=1) == {"a": 1}
    assert registry.build("optimizer", "fromkeys", ["x"]) == {"x": None}
    assert registry.build("optimizer", "via_callable", b=2) == {"b": 2}
    assert registry.names("optimizer") == ["fromkeys", "join", "ordered", "via_callable"]


def test_wrong_argument_names_list_the_accepted_ones() -> None:
    registry = make_registry(("transform", "split", "os.path:splitext", "p"))
    with pytest.raises(TypeError, match=r"transform 'split' \(plugin 'p'\).*Accepted arguments: p"):
        registry.build("transform", "split", q="x")


@pytest.mark.parametrize(
    ("name", "target", "error", "match"),
    [
        ("", "a:b", ValueError, "invalid loss name"),
        ("has space", "a:b", ValueError, "invalid loss name"),
        ("ok", "no_colon", ValueError, "expected 'package.module:attribute'"),
        ("ok", ":attr", ValueError, "expected 'package.module:attribute'"),
        ("ok", 42, TypeError, "must be a string or callable"),
    ],
)
def test_malformed_registrations_are_rejected(name: str, target: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Registry().registrar("loss", "p").register(name, target)  # type: ignore[arg-type]


def test_duplicate_names_fail_naming_both_plugins() -> None:
    registry = make_registry(("loss", "triplet", "a.mod:Triplet", "alpha"))
    with pytest.raises(DuplicateComponentError) as info:
        registry.registrar("loss", "beta").register("triplet", "b.mod:Triplet")
    message = str(info.value)
    assert "'alpha'" in message and "'beta'" in message and "a.mod:Triplet" in message and "override=True" in message
    # the same name in another kind is no clash
    registry.registrar("miner", "beta").register("triplet", "b.mod:Miner")


def test_override_wins_whatever_the_order() -> None:
    first = make_registry(("loss", "x", "a:A", "alpha"))
    first.registrar("loss", "beta").register("x", "b:B", override=True)
    second = Registry()
    second.registrar("loss", "beta").register("x", "b:B", override=True)
    second.registrar("loss", "alpha").register("x", "a:A")
    assert first.get("loss", "x").plugin == second.get("loss", "x").plugin == "beta"
    with pytest.raises(DuplicateComponentError, match=r"'beta'.*'gamma'"):
        second.registrar("loss", "gamma").register("x", "c:C", override=True)


def test_unknown_name_lists_closest_names_and_other_kinds() -> None:
    registry = make_registry(
        ("loss", "triplet", "m:T", "p"),
        ("loss", "triplet_with_miner", "m:TM", "p"),
        ("loss", "arcface", "m:A", "p"),
        ("miner", "hard", "m:H", "p"),
    )
    with pytest.raises(UnknownComponentError) as info:
        registry.get("loss", "tripplet")
    message = str(info.value)
    assert message.startswith("Unknown loss 'tripplet'. Did you mean: triplet")
    assert "Known loss names: arcface, triplet, triplet_with_miner" in message
    assert "`omlcore plugins --kind loss` lists them all" in message
    with pytest.raises(UnknownComponentError, match="'hard' is registered as a miner"):
        registry.get("loss", "hard")
    with pytest.raises(UnknownComponentError, match="Did you mean: arcface"):
        registry.get("loss", "ArcFace")
    with pytest.raises(UnknownComponentError, match=r"Unknown component kind 'losses'\. Did you mean: loss"):
        registry.get("losses", "triplet")


def test_unknown_name_among_many_does_not_list_them_all() -> None:
    registry = make_registry(*[("loss", f"loss{i:02d}", "m:L", "p") for i in range(25)])
    with pytest.raises(UnknownComponentError) as info:
        registry.get("loss", "loss7")
    assert "loss07" in str(info.value) and "Known loss names" not in str(info.value)


def test_unavailable_entry_names_the_extra() -> None:
    registry = Registry()
    registry.registrar("callback", "lightning").register(
        "fake.Callback",
        "omlcore_no_such_framework.callbacks:C",
        requires=("omlcore_no_such_framework",),
        extra="lightning",
    )
    entry = registry.get("callback", "fake.Callback")
    assert not entry.available and entry.missing == ["omlcore_no_such_framework"]
    assert entry.unavailable_reason == (
        'needs omlcore_no_such_framework, not installed: pip install "omlcore[lightning]"'
    )
    with pytest.raises(MissingDependencyError, match=r'callback \'fake.Callback\'.*pip install "omlcore\[lightning\]"'):
        entry.build()
    no_extra = Entry("loss", "x", "m:X", "p", requires=("omlcore_missing_a", "os"))
    assert no_extra.unavailable_reason == "needs omlcore_missing_a, not installed: pip install omlcore_missing_a"


def test_registrar_is_bound_to_kind_and_plugin() -> None:
    collected: list[Entry] = []
    registrar = Registrar("sampler", "mine", collected.append)
    registrar.register("s", "m:S", summary="one line", requires=["numpy"])
    assert collected == [Entry("sampler", "s", "m:S", "mine", ("numpy",), None, "one line", False)]
    assert len(make_registry(("loss", "a", "m:A", "p"), ("miner", "a", "m:A", "p"))) == 2
