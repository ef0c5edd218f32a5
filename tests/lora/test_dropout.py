"""LoRA dropout: the incumbent's semantics (a Bernoulli mask on the adapter input, kept values
scaled by 1 / (1 - p), gradients through the same mask) with peft-lora's cheaper CPU mask."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core import inject_adapter_in_model
from peft_lora import LoraConfig
from peft_lora.dropout import fast_dropout, input_dropout, keep_mask
from reliability.common import incumbent


def _layer(p: float) -> nn.Module:
    holder = nn.Module()
    holder.layer = nn.Linear(24, 16)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=p, target_modules=["layer"], init_lora_weights=False)
    inject_adapter_in_model(config, holder)
    return holder.layer


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    count = 2_000_001  # odd: the last 64-bit draw is half used
    mask = keep_mask(torch.Size([count]), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (count,)
    sigma = math.sqrt(p * (1 - p) / count)
    assert abs(float(mask.float().mean()) - (1 - p)) < 6 * sigma
    for lane in (mask[0::2], mask[1::2]):  # both int32 halves of every draw are uniform
        assert abs(float(lane.float().mean()) - (1 - p)) < 6 * sigma * math.sqrt(2)
    pairs = mask[:-1:2].float() * mask[1::2].float()  # the two halves of one draw are independent
    assert abs(float(pairs.mean()) - (1 - p) ** 2) < 8 * sigma


def test_the_mask_follows_torch_manual_seed() -> None:
    torch.manual_seed(3)
    first = keep_mask(torch.Size([5, 7]), 0.3, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(keep_mask(torch.Size([5, 7]), 0.3, torch.device("cpu")), first)


def test_forward_and_gradients_are_the_formula_with_that_mask() -> None:
    p = 0.25
    layer = _layer(p).train()
    x = torch.randn(6, 24, requires_grad=True)
    torch.manual_seed(11)
    with fast_dropout():
        out = layer(x)
    torch.manual_seed(11)
    mask = keep_mask(x.shape, p, x.device)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    dropped = x * mask / (1 - p)
    assert 0 < int(mask.sum()) < mask.numel()
    expected = layer.base_layer(x) + 2.0 * dropped @ a.T @ b.T
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, a, b], upstream)
    reference = torch.autograd.grad(expected, [x, a, b], upstream)
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_eval_mode_and_p_zero_are_the_identity() -> None:
    x = torch.randn(4, 8)
    assert input_dropout(x, 0.5, training=False) is x
    assert input_dropout(x, 0.0, training=True) is x
    assert torch.equal(input_dropout(x, 1.0, training=True), torch.zeros_like(x))
    layer = _layer(0.5).eval()
    y = torch.randn(3, 24)
    assert torch.equal(layer(y), layer(y))


def test_changing_the_dropout_modules_p_is_respected() -> None:
    layer = _layer(0.5).train()
    layer.lora_dropout["default"].p = 0.0  # as nn.Dropout: p is read at call time
    x = torch.randn(3, 24)
    assert torch.equal(layer(x), layer(x))


class _FixedMask(nn.Module):
    """The incumbent's dropout module replaced by one that applies a given mask."""

    def __init__(self, mask: Tensor, p: float) -> None:
        super().__init__()
        self.mask, self.p = mask, p

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask / (1 - self.p)


@pytest.mark.incumbent
def test_the_mask_sits_where_the_incumbent_puts_it() -> None:
    # Same adapter weights and the same mask on both sides: the training outputs agree, so
    # both drop the adapter's input (not the base path, not the rank-r hidden state).
    peft = incumbent()
    p = 0.3
    ours = _layer(p).train()
    holder = nn.Module()
    holder.layer = copy.deepcopy(ours.base_layer)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=p, target_modules=["layer"])
    theirs = peft.inject_adapter_in_model(config, holder).layer.train()
    theirs.lora_A["default"].weight.data.copy_(ours.lora_A["default"].weight)
    theirs.lora_B["default"].weight.data.copy_(ours.lora_B["default"].weight)
    x = torch.randn(5, 24)
    torch.manual_seed(5)
    with fast_dropout():
        out = ours(x)
    torch.manual_seed(5)
    theirs.lora_dropout["default"] = _FixedMask(keep_mask(x.shape, p, x.device), p)
    torch.testing.assert_close(out, theirs(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, F.linear(x, ours.base_layer.weight, ours.base_layer.bias), atol=1e-3)
