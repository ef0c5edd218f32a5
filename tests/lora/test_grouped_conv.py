"""LoRA on grouped convolutions (peft_lora.grouped_conv): its math, and what it refuses, with the reason."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core import ConfigError, MergeError, PeftError, PeftModel, get_peft_model, hotswap_adapter
from peft_loha import LoHaConfig
from peft_lora import LoraConfig, convert_to_lora
from peft_lora.grouped_conv import GroupedConv
from support.models import GroupedConvNet

ALL = ["conv1d", "conv2d", "depthwise", "conv3d"]


def _inputs() -> Tensor:
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def _model(base: nn.Module | None = None, **options: object) -> nn.Module:
    config = {"r": 4, "lora_alpha": 8, "target_modules": ALL, "rank_pattern": {"depthwise": 8}} | options
    model = copy.deepcopy(base) if base is not None else GroupedConvNet()
    return get_peft_model(model, LoraConfig(init_lora_weights=False, **config))  # type: ignore[arg-type]


def test_update_is_a_full_conv_then_a_grouped_1x1_conv() -> None:
    """``conv(x) + s B_G(A(x))``: A reads every input channel, B is grouped like the base."""
    model = _model(lora_bias=True)
    layer = model.base_model.model.conv2d
    assert isinstance(layer, GroupedConv)
    base = layer.base_layer
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.shape == (4, 4, 3, 3) and b.shape == (8, 2, 1, 1)  # A: (r, in, k, k); B: (out, r / groups, 1, 1)
    x = torch.randn(2, 4, 8, 8)
    hidden = F.conv2d(x, a, stride=2, padding=1)
    expected = base(x) + 2.0 * F.conv2d(hidden, b, layer.lora_B["default"].bias, groups=2)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)
    # Output group 0 depends on hidden channels 0-1 only: zeroing channels 2-3 of A leaves it unchanged.
    with torch.no_grad():
        a[2:].zero_()
    torch.testing.assert_close(layer(x)[:, :4], expected[:, :4], atol=1e-5, rtol=0)
    assert not torch.allclose(layer(x)[:, 4:], expected[:, 4:], atol=1e-4)


def test_depthwise_convolution_takes_rank_equal_to_channels() -> None:
    layer = _model().base_model.model.depthwise
    assert isinstance(layer, GroupedConv)
    assert layer.lora_B["default"].weight.shape == (8, 1, 1, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"r": 3}, r"r=3 for the grouped convolution 'conv1d' \(groups=2\).*multiple of 2, e.g. 4"),
        ({"rank_pattern": {"depthwise": 4}}, r"r=4 for the grouped convolution 'depthwise' \(groups=8\).*e.g. 8"),
    ],
)
def test_a_rank_that_is_not_a_multiple_of_groups_is_refused(options: dict[str, object], message: str) -> None:
    base = GroupedConvNet()
    before = copy.deepcopy(base.state_dict())
    config = {"r": 4, "target_modules": ALL, "rank_pattern": {"depthwise": 8}} | options
    with pytest.raises(ConfigError, match=message):
        get_peft_model(base, LoraConfig(**config))  # type: ignore[arg-type]
    assert all(isinstance(getattr(base, name), nn.Conv1d | nn.Conv2d | nn.Conv3d) for name in ALL)
    assert all(torch.equal(base.state_dict()[k], v) for k, v in before.items())


def test_dora_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"grouped convolutions \(Conv2d with groups > 1\) does not support use_dora"):
        get_peft_model(GroupedConvNet(), LoraConfig(r=4, target_modules=["conv2d"], use_dora=True))


def test_merging_is_refused_with_the_reason_and_changes_nothing() -> None:
    base = GroupedConvNet().eval()
    model = _model(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for merge in (model.merge_adapter, model.merge_and_unload):
        with pytest.raises(MergeError, match="update reads every input channel.*keep the adapter unmerged"):
            merge()
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    plain = model.unload()
    assert isinstance(plain.conv2d, nn.Conv2d)
    with torch.no_grad():
        torch.testing.assert_close(plain(_inputs()), base(_inputs()), atol=0, rtol=0)


def test_hotswap_weighted_and_conversion_are_refused(tmp_path: Path) -> None:
    model = _model()
    model.save_pretrained(tmp_path)
    with pytest.raises(PeftError, match="hotswap"):
        hotswap_adapter(model, tmp_path)
    with pytest.raises(PeftError, match="add_weighted_adapter"):
        model.add_weighted_adapter(["default"], [1.0], "combined")
    with pytest.raises(PeftError, match="'conv1d' wraps a Conv1d with groups > 1, whose update cannot be converted"):
        convert_to_lora(model, 2)


def test_another_method_on_a_grouped_convolution_is_not_converted_to_lora() -> None:
    """LoHa merges into a grouped weight, but LoRA there has a grouped B: no rank-r pair to convert to."""
    model = get_peft_model(GroupedConvNet(), LoHaConfig(r=2, target_modules=["conv2d"], init_weights=False))
    with pytest.raises(PeftError, match="'conv2d' wraps a Conv2d with groups > 1, whose update cannot be converted"):
        convert_to_lora(model, 2)


def test_conversion_relative_to_the_initial_adapter_keeps_the_groups(tmp_path: Path) -> None:
    """``path_initial_model_for_weight_conversion``: ``A' = [A; A0]``, ``B' = [B, -B0]`` per group of B.

    Only ``conv1d`` is adapted and the model is affine in its output, so the converted adapter
    must give ``trained - initial + base`` (a concatenation across groups would not)."""
    base = GroupedConvNet().eval()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["conv1d"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "initial")
    initial = model(_inputs()).detach()
    _noise(model)
    trained = model(_inputs()).detach()
    model.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=tmp_path / "initial")
    converted = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "lora")
    assert converted.base_model.model.conv1d.lora_B["default"].weight.shape == (6, 4, 1)  # (out, 2r / groups, 1)
    with torch.no_grad():
        expected = trained - initial + base(_inputs())
        torch.testing.assert_close(converted(_inputs()), expected, atol=1e-5, rtol=0)


def _noise(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
