"""Activation (gradient) checkpointing through the wrapper, with the base model frozen.

The incumbent's failure: reentrant checkpointing with frozen embeddings gives
"element 0 of tensors does not require grad" (or adapters without gradients).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.hf_peft import base_model
from support.models import token_ids
from support.training import train


def tiny_vit() -> nn.Module:
    """A vision model: transformers registers no input-grad hook for it (main input pixel_values)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    return ViTForImageClassification(config).eval()


TARGETS = {"gpt2": ["c_attn", "c_fc"], "llama": ["q_proj", "v_proj", "down_proj"], "bert": ["query", "value"]}
TARGETS["vit"] = ["q_proj", "v_proj"]


def _batch(name: str) -> dict[str, torch.Tensor]:
    if name == "vit":
        return {
            "pixel_values": torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
            "labels": torch.tensor([0, 2]),
        }
    ids = token_ids()
    return {"input_ids": ids, "labels": ids if name != "bert" else torch.tensor([0, 1])}


def _build(name: str) -> nn.Module:
    return tiny_vit() if name == "vit" else base_model(name)


def _gradients(model: PeftModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.train()  # checkpointing only acts in training mode; dropout off to compare exactly
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "use_cache=True is incompatible with gradient checkpointing"
        model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _peft(base: nn.Module, name: str) -> PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(
            copy.deepcopy(base), LoraConfig(r=4, target_modules=TARGETS[name], init_lora_weights=False)
        )


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non_reentrant"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "vit"])
def test_checkpointed_gradients_equal_plain_ones(name: str, reentrant: bool) -> None:
    plain = _peft(_build(name), name)
    batch = _batch(name)
    expected = _gradients(plain, batch)
    model = copy.deepcopy(plain)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.get_base_model().is_activation_checkpointing
    got = _gradients(model, batch)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == set(expected) == trainable  # every adapter tensor gets its gradient
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)


def test_checkpointing_switched_on_before_wrapping_also_works() -> None:
    base = tiny_vit()
    torch.manual_seed(1)
    expected = _gradients(_peft(base, "vit"), _batch("vit"))
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    torch.manual_seed(1)  # the same adapter weights
    model = _peft(base, "vit")
    got = _gradients(model, _batch("vit"))
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "enable",
    [
        lambda m: m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True}),
        lambda m: m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True}),
    ],
    ids=["gradient_checkpointing_enable", "activation_checkpointing_enable"],
)
def test_both_names_of_the_api_and_disable(enable: Callable[[PeftModel], None]) -> None:
    model = _peft(tiny_vit(), "vit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the wrapper uses transformers' current name
        enable(model)
    base = model.get_base_model()
    assert base.is_activation_checkpointing and len(base._require_grads_hooks) == 1
    enable(model)  # twice: still one hook
    assert len(base._require_grads_hooks) == 1
    model.gradient_checkpointing_disable()
    assert not base.is_activation_checkpointing and not base._require_grads_hooks


def test_training_with_reentrant_checkpointing_lowers_the_loss_and_moves_only_adapters() -> None:
    base = _build("vit")
    model = _peft(base, "vit")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch("vit")
    model.train()
    losses = train(model, lambda: model(**batch).loss, steps=12, lr=5e-2)
    assert losses[-1] < losses[0] - 0.2
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad} and all("lora_" in n for n in moved)


def test_a_model_without_checkpointing_gets_a_clear_error() -> None:
    from peft_core import PeftError
    from support.models import MLP

    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"]))
    with pytest.raises(PeftError, match="MLP has no activation checkpointing"):
        model.gradient_checkpointing_enable()
