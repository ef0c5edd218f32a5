"""Plugins: a plugin that fails on import, raises in a hook or returns garbage is isolated.

The registry side is proven in tests/core/test_registry.py (import failures, contract
breaches, conflicts, strict mode); this adds the model side: a hook failing mid-injection
leaves the model as it was.
"""

from __future__ import annotations

import types

import pytest
from torch import nn

import peft_core
from peft_core import PluginError, get_peft_model, hookimpl
from peft_lora import LoraConfig
from reliability.common import Snapshot, X
from support.models import MLP


def _layer_hook(answer: object) -> types.SimpleNamespace:
    def peft_adapter_layer(tuner: object, target: nn.Module, adapter_name: str, config: object) -> object:
        if target.out_features == 3:  # the head: injection has already wrapped lin0 and lin1
            return answer() if callable(answer) else answer
        return None

    return types.SimpleNamespace(peft_adapter_layer=hookimpl(peft_adapter_layer))


def _boom() -> None:
    raise RuntimeError("plugin bug")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_boom, r"plugin '.*' raised in peft_adapter_layer: RuntimeError\('plugin bug'\)"),
        ("garbage", "returned str from peft_adapter_layer; it must return an AdapterLayer or None"),
    ],
)
def test_a_failing_layer_hook_is_one_plugin_error_and_the_model_is_unchanged(answer: object, message: str) -> None:
    plugin = _layer_hook(answer)
    peft_core.register(plugin, name="flaky-layers")
    try:
        model = MLP()
        before = Snapshot.of(model, X)
        with pytest.raises(PluginError, match=message):
            get_peft_model(model, LoraConfig(target_modules=["lin0", "lin1", "head"]))
        before.assert_same(Snapshot.of(model, X))
    finally:
        peft_core.registry.unregister(plugin)
