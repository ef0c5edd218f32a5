"""peft-lora-scaled: first-party LoRA adapts ScaledLinear through the hook, and merges into it exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import peft_core
from peft_core import ConfigError, get_peft_model
from peft_core.testing import TunerConformance
from peft_lora import LoraConfig
from peft_lora_scaled import ScaledLinear, ScaledLoraLinear


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = ScaledLinear(6, 12, scale=4.0)
        self.plain = nn.Linear(12, 12)
        self.down = ScaledLinear(12, 3, scale=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.plain(torch.relu(self.up(x)))))


class TestLoraOnScaledLinear(TunerConformance):
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["up", "plain", "down"])

    def make_model(self) -> nn.Module:
        return Net()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(4, 6)


def test_the_hook_supplies_the_layer_and_lora_its_own_for_the_rest() -> None:
    model = get_peft_model(Net(), LoraConfig(r=2, target_modules=["up", "plain", "down"]))
    inner = model.base_model.model
    assert type(inner.up) is ScaledLoraLinear and type(inner.down) is ScaledLoraLinear
    assert type(inner.plain).__name__ == "Linear" and type(inner.plain).__module__ == "peft_lora.layer"


def test_merging_divides_the_update_by_the_scale() -> None:
    base = Net()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["up"], init_lora_weights=False))
    layer = model.base_model.model.up
    x = torch.randn(3, 6)
    with torch.no_grad():
        unmerged = model(x)
        delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
        model.merge_adapter()
        assert torch.allclose(layer.base_layer.weight, base.up.weight + delta / 4.0, atol=1e-6)
        assert torch.allclose(model(x), unmerged, atol=1e-5)


def test_without_the_plugin_lora_refuses_scaled_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "lora_scaled")
    peft_core.registry.reset()
    try:
        assert [p.name for p in peft_core.registry.plugins() if p.disabled] == ["lora_scaled"]
        with pytest.raises(ConfigError, match="cannot adapt 'up' of type ScaledLinear"):
            peft_core.get_peft_model(Net(), LoraConfig(r=2, target_modules=["up"]))
    finally:
        monkeypatch.delenv("PEFT_CORE_DISABLE_PLUGINS")
        peft_core.registry.reset()
