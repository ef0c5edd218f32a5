"""The registry: discovery through entry points, isolation of broken plugins, conflicts."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import torch
from torch import nn

import peft_core
from peft_core import PluginConflictError, PluginError, hookimpl
from peft_core import registry as global_registry
from peft_core.contract import BaseTuner, PeftConfig
from peft_core.registry import PluginRegistry
from peft_lora import LoraConfig, LoraTuner


class ToyConfig(PeftConfig):
    peft_type: Literal["TOY"] = "TOY"


class ToyTuner(BaseTuner):
    name = "toy"
    config_class = ToyConfig


@dataclass
class FakeDist:
    name: str
    version: str = "1.0"


@dataclass
class FakeEntryPoint:
    name: str
    dist: FakeDist
    loader: Callable[[], Any]

    def load(self) -> Any:
        return self.loader()


def _plugin(*tuners: type[BaseTuner]) -> types.SimpleNamespace:
    return types.SimpleNamespace(peft_tuners=hookimpl(lambda: list(tuners)))


def _registry(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> PluginRegistry:
    monkeypatch.setattr("peft_core.registry.manager.entry_points", lambda group: list(eps))
    return PluginRegistry()


def _fail() -> Any:
    raise ImportError("No module named 'missing_dependency'")


def test_installed_plugins_are_discovered_through_entry_points() -> None:
    plugins = {p.name: p for p in global_registry.plugins()}
    assert plugins["lora"].distribution == "peft-lora" and plugins["lora"].tuners == ["lora"]
    assert plugins["ia3"].distribution == "peft-ia3" and plugins["ia3"].tuners == ["ia3"]
    assert global_registry.get_tuner("lora") is LoraTuner
    assert global_registry.tuner_for_peft_type("LORA") is LoraTuner


def test_config_classes_are_importable_from_the_core() -> None:
    assert peft_core.LoraConfig is LoraConfig
    with pytest.raises(AttributeError):
        _ = peft_core.NoSuchConfig


def test_discovery_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    registry = _registry(
        monkeypatch, FakeEntryPoint("toy", FakeDist("toy-dist"), lambda: calls.append(1) or _plugin(ToyTuner))
    )
    assert calls == []
    assert registry.get_tuner("toy") is ToyTuner
    registry.get_tuner("toy")
    assert calls == [1]


def test_a_plugin_that_fails_to_import_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _registry(
        monkeypatch,
        FakeEntryPoint("bad", FakeDist("bad-dist"), _fail),
        FakeEntryPoint("toy", FakeDist("toy-dist"), lambda: _plugin(ToyTuner)),
    )
    with pytest.warns(RuntimeWarning, match="'bad' \\(bad-dist\\) is broken.*missing_dependency"):
        assert registry.get_tuner("toy") is ToyTuner
    broken = [p for p in registry.plugins() if p.broken]
    assert [(p.name, p.distribution) for p in broken] == [("bad", "bad-dist")]
    assert "missing_dependency" in (broken[0].error or "")


@pytest.mark.parametrize(
    ("plugin", "reason"),
    [
        (types.SimpleNamespace(peft_tuners=hookimpl(lambda: 1 / 0)), "peft_tuners raised ZeroDivisionError"),
        (types.SimpleNamespace(peft_tuners=hookimpl(lambda: "lora")), "must return a list"),
        (types.SimpleNamespace(peft_tuners=hookimpl(lambda: [nn.Linear])), "not a BaseTuner subclass"),
        (types.SimpleNamespace(peft_wrong_hook=hookimpl(lambda: [])), "hook contract"),
    ],
)
def test_a_plugin_breaking_the_contract_is_isolated(
    monkeypatch: pytest.MonkeyPatch, plugin: object, reason: str
) -> None:
    registry = _registry(
        monkeypatch,
        FakeEntryPoint("bad", FakeDist("bad-dist"), lambda: plugin),
        FakeEntryPoint("toy", FakeDist("toy-dist"), lambda: _plugin(ToyTuner)),
    )
    with pytest.warns(RuntimeWarning, match="broken"):
        assert list(registry.tuners()) == ["toy"]
    assert reason in next(p.error for p in registry.plugins() if p.broken)


def test_strict_mode_turns_a_broken_plugin_into_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFT_CORE_STRICT_PLUGINS", "1")
    registry = _registry(monkeypatch, FakeEntryPoint("bad", FakeDist("bad-dist"), _fail))
    with pytest.raises(PluginError, match="PEFT_CORE_STRICT_PLUGINS"):
        registry.tuners()


def test_plugins_can_be_disabled_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "toy, other")
    loaded = []
    registry = _registry(monkeypatch, FakeEntryPoint("toy", FakeDist("toy-dist"), lambda: loaded.append(1)))
    assert registry.tuners() == {}
    assert loaded == []
    assert [p.disabled for p in registry.plugins()] == [True]
    with pytest.raises(PluginError, match="no tuner named 'toy'"):
        registry.get_tuner("toy")


def test_two_plugins_claiming_one_name_is_an_error_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    class OtherToy(ToyTuner):
        pass

    registry = _registry(
        monkeypatch,
        FakeEntryPoint("toy", FakeDist("toy-dist"), lambda: _plugin(ToyTuner)),
        FakeEntryPoint("toy2", FakeDist("other-dist"), lambda: _plugin(OtherToy)),
        FakeEntryPoint("lora", FakeDist("peft-lora"), lambda: _plugin(LoraTuner)),
    )
    with pytest.raises(PluginConflictError, match="toy-dist.*other-dist"):
        registry.get_tuner("toy")
    assert registry.get_tuner("lora") is LoraTuner  # the rest keeps working


def test_register_tuner_decorator_and_its_duplicate_check() -> None:
    class NoteConfig(PeftConfig):
        peft_type: Literal["NOTEBOOK"] = "NOTEBOOK"

    @peft_core.register_tuner("notebook")
    class NotebookTuner(BaseTuner):
        config_class = NoteConfig

    try:
        assert global_registry.get_tuner("notebook") is NotebookTuner
        assert global_registry.tuner_for_peft_type("NOTEBOOK") is NotebookTuner
        with pytest.raises(PluginConflictError, match="already provided by <in-process"):

            @peft_core.register_tuner
            class Again(NotebookTuner):
                pass

        with pytest.raises(PluginConflictError, match="already provided by peft-lora"):
            peft_core.register_tuner(type("Lora2", (LoraTuner,), {"name": "lora2"}))
    finally:
        global_registry.unregister_tuner("notebook")
    with pytest.raises(PluginError):
        global_registry.get_tuner("notebook")


def test_register_an_in_process_plugin_object() -> None:
    plugin = _plugin(ToyTuner)
    info = peft_core.register(plugin, name="toy-plugin")
    try:
        assert info.tuners == ["toy"]
        assert global_registry.get_tuner("toy") is ToyTuner
        with pytest.raises(PluginConflictError):
            peft_core.register(_plugin(ToyTuner), name="toy-again")
    finally:
        global_registry.unregister(plugin)
    assert "toy" not in global_registry.tuners()


def test_invalid_tuner_classes_are_refused() -> None:
    with pytest.raises(PluginError, match="name must be an identifier"):
        peft_core.register_tuner(type("Bad", (BaseTuner,), {"name": "has space", "config_class": ToyConfig}))
    with pytest.raises(PluginError, match="config_class must subclass PeftConfig"):
        peft_core.register_tuner(type("Bad", (BaseTuner,), {"name": "bad", "config_class": dict}))


def test_unknown_peft_type_lists_what_is_available() -> None:
    with pytest.raises(PluginError, match=r"no installed plugin handles peft_type 'VERA'.*lora \(LORA\)"):
        global_registry.tuner_for_peft_type("VERA")


def test_adapter_layer_hook_answers_are_checked() -> None:
    plugin = types.SimpleNamespace(
        peft_adapter_layer=hookimpl(lambda tuner, target, adapter_name, config: nn.Linear(1, 1))
    )
    peft_core.register(plugin, name="garbage-layers")
    try:
        with pytest.raises(PluginError, match="returned Linear from peft_adapter_layer"):
            peft_core.inject_adapter_in_model(LoraConfig(target_modules=["0"]), nn.Sequential(nn.Linear(2, 2)))
    finally:
        global_registry.unregister(plugin)


def test_a_misspelled_hook_is_refused_when_registering_in_process() -> None:
    plugin = types.SimpleNamespace(peft_tuner=hookimpl(lambda: [ToyTuner]))  # "peft_tuners"
    with pytest.raises(PluginError, match="does not meet the hook contract.*peft_tuner"):
        peft_core.register(plugin, name="typo")
    assert "typo" not in [p.name for p in global_registry.plugins()]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda **_: 1 / 0, r"raised in peft_adapter_layer: ZeroDivisionError.*\(asked to wrap a Linear\)"),
        (lambda **_: "a layer", r"returned str from peft_adapter_layer"),
    ],
)
def test_a_failing_layer_hook_names_the_plugin_and_leaves_the_model_unchanged(
    answer: Callable[..., Any], message: str
) -> None:
    def peft_adapter_layer(tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig) -> Any:
        return answer() if tuner.name == "lora" and isinstance(target, nn.Linear) else None

    plugin = types.SimpleNamespace(peft_adapter_layer=hookimpl(peft_adapter_layer))
    peft_core.register(plugin, name="failing-layers")
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with pytest.raises(PluginError, match=f"'<in-process: .*>:failing-layers' {message}.*not changed"):
            peft_core.inject_adapter_in_model(LoraConfig(target_modules=["0", "1"]), model)
        assert [type(m) for m in model] == [nn.Linear, nn.Linear]
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert all(p.requires_grad for p in model.parameters())
        # Other tuners, which the hook passes on, are not affected.
        from peft_ia3 import IA3Config

        peft_core.inject_adapter_in_model(IA3Config(target_modules=["0"]), model)
    finally:
        global_registry.unregister(plugin)
