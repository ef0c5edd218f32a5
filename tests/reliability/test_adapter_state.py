"""Adapter state: active, disabled and trainable never change each other; per-row routing is per call.

Also proven in tests/core/test_peft_model.py: disable_adapter restores on exceptions and
changes no flags, set_adapter changes no flags, several active adapters add up.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import Tensor, nn

import peft_core
from peft_core import PeftError, PeftModel, get_peft_model
from peft_core.contract import AdapterLayer, BaseTuner, PeftConfig, TargetedConfig
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from reliability.common import X, incumbent, lora_mlp
from support.models import MLP


def _flags(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_disable_adapter_leaves_a_loaded_inference_adapter_frozen(tmp_path: Path) -> None:
    base, model = lora_mlp()
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)  # inference mode
    with loaded.disable_adapter():
        assert loaded.active_adapters == ["default"]  # disabled is not inactive
    assert not any(_flags(loaded).values())


@pytest.mark.incumbent
def test_incumbent_disable_adapter_makes_an_inference_adapter_trainable() -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0"], inference_mode=True))
    assert not any(_flags(model).values())
    with model.disable_adapter():
        pass
    assert any(_flags(model).values())


def test_loading_or_switching_adapters_never_flips_another_adapters_requires_grad(tmp_path: Path) -> None:
    _, model = lora_mlp()
    model.save_pretrained(tmp_path)
    model.base_model.model.head.weight.requires_grad_(True)  # the user also trains the head
    flags = _flags(model)
    model.load_adapter(tmp_path, "frozen")
    model.load_adapter(tmp_path, "trainable", is_trainable=True)
    for names in (["frozen"], ["default", "trainable"], ["trainable"]):
        model.set_adapter(names)
        assert model.active_adapters == names
        now = _flags(model)
        assert {n: now[n] for n in flags} == flags  # the first adapter and the head, as they were
        assert not any(v for n, v in now.items() if ".frozen" in n)
        assert all(v for n, v in now.items() if ".trainable" in n)
    model.delete_adapter("trainable")
    assert {n: f for n, f in _flags(model).items() if n in flags} == flags


@pytest.mark.incumbent
def test_incumbent_set_adapter_flips_trainability(tmp_path: Path) -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0"]))
    model.save_pretrained(tmp_path)
    model.load_adapter(tmp_path, "other")  # loaded for inference
    model.set_adapter("other")
    assert not model.base_model.model.lin0.lora_A["default"].weight.requires_grad  # was trainable
    assert model.base_model.model.lin0.lora_A["other"].weight.requires_grad  # was frozen


def test_set_adapter_with_a_list_activates_all_of_them() -> None:
    base, model = lora_mlp(target_modules=["lin0"])
    model.add_adapter("b", LoraConfig(r=2, target_modules=["lin0"], init_lora_weights=False))
    model.set_adapter(["default", "b"])
    layer = model.base_model.model.lin0
    with torch.no_grad():
        x = torch.randn(2, 16)
        expected = base.lin0(x) + sum(layer.lora_B[n](layer.lora_A[n](x)) * layer.scaling[n] for n in ("default", "b"))
        assert torch.allclose(layer(x), expected, atol=1e-6)
    assert model.active_adapters == ["default", "b"]


def _two_adapters() -> tuple[nn.Module, PeftModel]:
    base, model = lora_mlp()
    model.add_adapter("b", LoraConfig(r=2, target_modules=["lin0", "lin1"], init_lora_weights=False))
    return base, model.eval()


def test_a_mixed_batch_forward_that_raises_leaves_the_next_calls_correct() -> None:
    _, model = _two_adapters()
    rows = ["b", "__base__", "default"]
    with torch.no_grad():
        plain, mixed = model(X), model(X, adapter_names=rows)
        with pytest.raises(IndexError):
            model(X + 100, adapter_names=rows)  # token ids out of range: raises inside the forward
        assert not any(layer.row_routing for layer in model.modules() if isinstance(layer, AdapterLayer))
        assert torch.equal(model(X), plain)
        assert torch.equal(model(X, adapter_names=rows), mixed)


@pytest.mark.incumbent
def test_incumbent_a_mixed_batch_forward_that_raises_poisons_later_calls() -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    model.add_adapter("b", peft.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    model.eval()
    with torch.no_grad():
        plain = model(X)
        with pytest.raises(IndexError):
            model(X + 100, adapter_names=["b", "b", "b"])
        assert not torch.equal(model(X), plain)  # the hook routing every row to "b" was left behind


def test_ia3_honours_per_row_adapters() -> None:
    base = MLP()
    model = get_peft_model(copy.deepcopy(base), IA3Config(target_modules=["lin0"], init_ia3_weights=False))
    with torch.no_grad():
        mixed = model(X, adapter_names=["default", "__base__", "default"])
        assert torch.equal(mixed[1], base(X)[1])
        assert torch.allclose(mixed[0], model(X)[0], atol=1e-6) and not torch.allclose(mixed[0], base(X)[0])


@pytest.mark.incumbent
def test_incumbent_ia3_ignores_adapter_names() -> None:
    peft = incumbent()
    config = peft.IA3Config(target_modules=["lin0"], feedforward_modules=[], init_ia3_weights=False)
    model = peft.get_peft_model(MLP(), config)
    with torch.no_grad():
        assert torch.equal(model(X, adapter_names=["default", "__base__", "default"]), model(X))


class ScaleConfig(TargetedConfig):
    peft_type: Literal["SCALE_TEST"] = "SCALE_TEST"


class ScaleLayer(AdapterLayer):
    """A method with one learned scalar per adapter and no per-row support."""

    adapter_attribute_names: ClassVar[tuple[str, ...]] = ("scale",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.scale = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        self.scale[adapter_name] = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out: Tensor = self.base_layer(x, *args, **kwargs)
        return out * self.scale[self.active_adapters[0]] if self.use_adapters else out


class ScaleTuner(BaseTuner):
    name = "scale_test"
    config_class = ScaleConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        layer = ScaleLayer(target)
        layer.add_adapter(adapter_name, config)
        return layer


def test_a_tuner_without_per_row_support_says_so() -> None:
    peft_core.register_tuner(ScaleTuner)
    try:
        model = get_peft_model(MLP(), ScaleConfig(target_modules=["lin0"]))
        with pytest.raises(PeftError, match=r"per-row adapters \(adapter_names=...\) are not supported by ScaleLayer"):
            model(X, adapter_names=["default"] * 3)
    finally:
        peft_core.registry.unregister_tuner("scale_test")
