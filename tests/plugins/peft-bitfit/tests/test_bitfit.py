"""peft-bitfit: the conformance suite, plus what is specific to bias deltas."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peft_bitfit import BiasDeltaLayer, BitFitConfig
from peft_core import ConfigError, PeftModel, get_peft_model
from peft_core.testing import TunerConformance


class Net(nn.Module):
    """A conv, a norm and linears: bias on channels (dim 1) and on trailing dims."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, 3, 4, 4)
        h = torch.relu(self.conv(x)).mean(1).flatten(1)  # (batch, 16)
        return self.head(torch.relu(self.fc(self.norm(h))))


class TestBitFit(TunerConformance):
    config = BitFitConfig(target_modules=["conv", "norm", "fc"])
    second_config = BitFitConfig(target_modules=["fc", "head"])
    expected_keys = frozenset(f"base_model.model.{m}.bias_delta" for m in ("conv", "norm", "fc"))

    def make_model(self) -> nn.Module:
        return Net()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(5, 3, 4, 4)


def _model() -> tuple[Net, PeftModel]:
    base = Net().eval()
    model = get_peft_model(copy.deepcopy(base), BitFitConfig(target_modules=["conv", "fc"], init_scale=0.5))
    return base, model


def test_delta_is_added_where_the_bias_goes() -> None:
    base, model = _model()
    conv, fc = model.base_model.model.conv, model.base_model.model.fc
    assert isinstance(conv, BiasDeltaLayer) and isinstance(fc, BiasDeltaLayer)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        expected_conv = base.conv(x) + conv.bias_delta["default"].view(1, 4, 1, 1)
        assert torch.allclose(conv(x), expected_conv, atol=1e-6)
        h = torch.randn(2, 16)
        assert torch.allclose(fc(h), base.fc(h) + fc.bias_delta["default"], atol=1e-6)


def test_merge_moves_only_the_biases_and_unmerge_restores_them() -> None:
    base, model = _model()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        unmerged = model(x)
        model.merge_adapter()
        assert torch.allclose(model(x), unmerged, atol=1e-6)
        merged = model.get_base_model()
        assert torch.equal(merged.conv.base_layer.weight, base.conv.weight)
        delta = merged.conv.bias_delta["default"]
        assert torch.allclose(merged.conv.base_layer.bias, base.conv.bias + delta, atol=1e-7)
        model.unmerge_adapter()
        assert torch.allclose(merged.conv.base_layer.bias, base.conv.bias, atol=1e-7)


def test_several_adapters_add_up_and_rows_can_pick_their_own() -> None:
    base, model = _model()
    model.add_adapter("b", BitFitConfig(target_modules=["fc"], init_scale=0.5))
    fc = model.base_model.model.fc
    h, x = torch.randn(2, 16), torch.randn(3, 3, 4, 4)
    with torch.no_grad():
        model.set_adapter(["default", "b"])
        expected = base.fc(h) + fc.bias_delta["default"] + fc.bias_delta["b"]
        assert torch.allclose(fc(h), expected, atol=1e-6)
        alone = {}
        for name in ("default", "b"):
            model.set_adapter(name)
            alone[name] = model(x)
        mixed = model(x, adapter_names=["b", "__base__", "default"])
        assert torch.allclose(mixed[0], alone["b"][0], atol=1e-6)
        assert torch.allclose(mixed[1], base(x)[1], atol=1e-6)
        assert torch.allclose(mixed[2], alone["default"][2], atol=1e-6)


def test_saved_file_holds_one_delta_per_target_and_loads_under_another_name(tmp_path: Path) -> None:
    base, model = _model()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "base_model.model.conv.bias_delta": (4,),
        "base_model.model.fc.bias_delta": (8,),
    }
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, adapter_name="mine")
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_layer_without_bias_is_refused_by_name() -> None:
    holder = nn.Sequential(nn.Linear(4, 4, bias=False))
    with pytest.raises(ConfigError, match="BitFit needs a layer with a bias; Linear has none"):
        get_peft_model(holder, BitFitConfig(target_modules=["0"]))
    assert type(holder[0]) is nn.Linear
