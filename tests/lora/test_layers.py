"""LoRA layers against the formula ``h = W x + (alpha / r) B A x``, one layer type at a time."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from peft_core import inject_adapter_in_model
from peft_core.engine.merging import merge_layer, unmerge_layer
from peft_lora import Conv, Embedding, Linear, LoraConfig


class Conv1D(nn.Module):
    """transformers' Conv1D as GPT-2 uses it: weight stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def _wrap(module: nn.Module, **kwargs: object) -> nn.Module:
    config = LoraConfig(**({"r": 3, "lora_alpha": 6, "target_modules": ["layer"], "init_lora_weights": False} | kwargs))
    holder = nn.Module()
    holder.layer = module
    inject_adapter_in_model(config, holder)
    return holder.layer


def test_linear_matches_the_formula() -> None:
    base = nn.Linear(5, 7)
    layer = _wrap(base)
    assert isinstance(layer, Linear)
    x = torch.randn(2, 4, 5)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = F.linear(x, base.weight, base.bias) + (6 / 3) * x @ a.T @ b.T
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(layer.delta_weight("default"), 2 * b @ a, atol=1e-6)


def test_conv1d_transformers_uses_the_transposed_weight() -> None:
    torch.manual_seed(0)
    base = Conv1D(7, 5)
    with pytest.warns(UserWarning, match="fan_in_fan_out=True"):
        layer = _wrap(base)
    assert isinstance(layer, Linear) and layer.fan_in_fan_out
    x = torch.randn(3, 5)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert torch.allclose(layer(x), base(x) + 2 * x @ a.T @ b.T, atol=1e-5)
    assert layer.delta_weight("default").shape == base.weight.shape
    unmerged = layer(x)
    merge_layer(layer, ["default"])
    assert torch.allclose(base(x), unmerged, atol=1e-5)


def test_embedding_matches_the_formula() -> None:
    base = nn.Embedding(11, 6, padding_idx=0)
    layer = _wrap(base)
    assert isinstance(layer, Embedding)
    x = torch.tensor([[0, 3, 10], [2, 2, 5]])
    a, b = layer.lora_embedding_A["default"], layer.lora_embedding_B["default"]
    assert a.shape == (3, 11) and b.shape == (6, 3)
    expected = base.weight[x] + 2 * (b @ a).T[x]
    assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "base", [nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.Conv1d(4, 6, 3, dilation=2), nn.Conv3d(2, 3, (1, 2, 2))]
)
def test_conv_merged_equals_unmerged(base: nn.Module) -> None:
    layer = _wrap(base)
    assert isinstance(layer, Conv)
    shape = {nn.Conv1d: (2, 4, 16), nn.Conv2d: (2, 4, 8, 8), nn.Conv3d: (2, 2, 3, 4, 4)}[type(base)]
    x = torch.randn(shape)
    with torch.no_grad():
        unmerged = layer(x)
        weight = base.weight.clone()
        merge_layer(layer, ["default"])
        assert torch.allclose(base(x), unmerged, atol=1e-5)
        unmerge_layer(layer)
        assert torch.allclose(base.weight, weight, atol=1e-6)


def test_default_init_starts_at_the_base_model() -> None:
    layer = _wrap(nn.Linear(64, 64), init_lora_weights=True, r=8)
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) on fan_in 64
    a = layer.lora_A["default"].weight
    assert a.abs().max() <= bound and a.std() > bound / 3


def test_gaussian_init() -> None:
    layer = _wrap(nn.Linear(200, 200), init_lora_weights="gaussian", r=10)
    assert abs(layer.lora_A["default"].weight.std().item() - 0.1) < 0.01
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


def test_rslora_rank_and_alpha_patterns() -> None:
    holder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["0", "1", "2"],
        use_rslora=True,
        rank_pattern={"1": 2},
        alpha_pattern={"2": 2},
    )
    inject_adapter_in_model(config, holder)
    assert [holder[i].r["default"] for i in range(3)] == [4, 2, 4]
    assert [holder[i].scaling["default"] for i in range(3)] == [8 / 2, 8 / math.sqrt(2), 2 / 2]


def test_adapter_in_fp32_on_a_bf16_base() -> None:
    base = nn.Linear(8, 8).to(torch.bfloat16)
    layer = _wrap(base)
    assert layer.lora_A["default"].weight.dtype == torch.float32
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = (base(x).float() + 2 * x.float() @ a.T @ b.T).to(torch.bfloat16)
    assert torch.allclose(out.float(), expected.float(), atol=2e-2)
    weight = base.weight.clone()
    merge_layer(layer, ["default"])
    assert torch.equal(base.weight, (weight.float() + layer.delta_weight("default")).to(torch.bfloat16))


def test_adapter_in_the_base_dtype_when_autocast_is_off() -> None:
    holder = nn.Module()
    holder.layer = nn.Linear(8, 8).to(torch.bfloat16)
    inject_adapter_in_model(LoraConfig(target_modules=["layer"]), holder, autocast_adapter_dtype=False)
    assert holder.layer.lora_A["default"].weight.dtype == torch.bfloat16


def test_adapters_are_created_on_the_meta_device() -> None:
    with torch.device("meta"):
        holder = nn.Sequential(nn.Linear(4096, 4096))
    inject_adapter_in_model(LoraConfig(target_modules=["0"]), holder)
    assert holder[0].lora_A["default"].weight.device.type == "meta"


@pytest.mark.parametrize(
    ("bias", "expected"),
    [("none", set()), ("lora_only", {"0.base_layer.bias"}), ("all", {"0.base_layer.bias", "1.bias"})],
)
def test_bias_modes_train_and_save_biases(bias: str, expected: set[str]) -> None:
    from peft_core import get_peft_model_state_dict

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    inject_adapter_in_model(LoraConfig(target_modules=["0"], bias=bias), model)  # type: ignore[arg-type]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable == expected
    assert {k for k in get_peft_model_state_dict(model) if "lora_" not in k} == expected


def test_dropout_applies_to_the_adapter_input_only_in_training() -> None:
    layer = _wrap(nn.Linear(16, 16), lora_dropout=0.5)
    x = torch.randn(4, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))
