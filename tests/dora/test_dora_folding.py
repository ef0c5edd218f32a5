"""DoRA's folded training path (peft_dora.fold) computes what the unfolded one does, outputs and gradients."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_dora import DoraLinear
from peft_dora.fold import FoldedDora
from peft_lora import LoraConfig
from support.models import tiny_gpt2


class Net(nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 96, bias=bias)
        self.head = nn.Linear(96, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(x)))


def _adapted(base: nn.Module, config: LoraConfig, dtype: torch.dtype = torch.float32) -> PeftModel:
    torch.manual_seed(0)  # the same initial A in every copy
    model = get_peft_model(base.to(dtype), config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator).to(dtype))
    return model.train()


def _step(
    model: PeftModel, x: torch.Tensor, run: Callable[[PeftModel, torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Output and every gradient (adapter tensors, trained biases, the input) of one step."""
    x = x.clone().requires_grad_(True)
    output = run(model, x)
    output.pow(2).mean().backward()
    found = {"output": output.detach(), "input": x.grad}
    found.update({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    return found


def _counting_folds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = FoldedDora.apply

    def counted(*args: object) -> object:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(FoldedDora, "apply", counted)
    return calls


@pytest.mark.parametrize("bias", ["none", "lora_only"])
def test_the_folded_step_equals_the_unfolded_one_and_float64(bias: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = Net(bias=True)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["proj"], use_dora=True, bias=bias)  # type: ignore[arg-type]
    x = torch.randn(4, 128, 64)  # 512 tokens: enough to fold

    def run(model: PeftModel, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    calls = _counting_folds(monkeypatch)
    folded = _step(_adapted(copy.deepcopy(base), config), x, run)
    assert calls, "the folded path was not taken"
    monkeypatch.setattr(DoraLinear, "folds_into_weight", False)
    calls.clear()
    unfolded = _step(_adapted(copy.deepcopy(base), config), x, run)
    assert not calls
    exact = _step(_adapted(copy.deepcopy(base), config, torch.float64), x.double(), run)
    assert folded.keys() == unfolded.keys() == exact.keys() and len(folded) >= 5
    for key in folded:
        scale = float(exact[key].abs().max())
        torch.testing.assert_close(
            folded[key], unfolded[key], atol=1e-5 * scale, rtol=0, msg=lambda text, key=key: f"{key}: {text}"
        )
        torch.testing.assert_close(
            folded[key].double(), exact[key], atol=1e-5 * scale, rtol=0, msg=lambda text, key=key: f"{key}: {text}"
        )


def test_the_folded_step_on_conv1d_weights_equals_the_unfolded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    base = tiny_gpt2()
    config = LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_dora=True)
    ids = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(0))

    def run(model: PeftModel, inputs: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # GPT-2's own dropout
        return model(inputs_embeds=inputs).logits

    embeds = base.get_input_embeddings()(ids).detach()
    calls = _counting_folds(monkeypatch)
    folded = _step(_adapted(copy.deepcopy(base), config), embeds, run)
    assert calls
    monkeypatch.setattr(DoraLinear, "folds_into_weight", False)
    unfolded = _step(_adapted(copy.deepcopy(base), config), embeds, run)
    for key in folded:
        scale = float(unfolded[key].abs().max())
        torch.testing.assert_close(
            folded[key], unfolded[key], atol=1e-5 * scale, rtol=0, msg=lambda text, key=key: f"{key}: {text}"
        )


def test_inference_zero_magnitudes_and_few_tokens_do_not_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _adapted(Net(bias=True), LoraConfig(r=8, target_modules=["proj"], use_dora=True))
    calls = _counting_folds(monkeypatch)
    with torch.no_grad():
        model(torch.randn(4, 128, 64))  # inference: the cached norm, unfolded
    model(torch.randn(2, 64)).sum().backward()  # 2 tokens: cheaper unfolded
    assert not calls
    layer = model.get_base_model().proj
    with torch.no_grad():
        layer.lora_magnitude_vector["default"][5] = 0.0  # the folded backward would divide by it
    model(torch.randn(4, 128, 64)).sum().backward()
    assert not calls
    assert all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None)
