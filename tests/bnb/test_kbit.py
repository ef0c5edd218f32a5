"""``prepare_model_for_kbit_training`` (peft_bnb) does what Hugging Face PEFT's function of that name does."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("bitsandbytes")

import peft
import torch
from torch import nn

from peft_bnb import is_quantized, prepare_model_for_kbit_training
from peft_core import get_peft_model
from peft_lora import LoraConfig
from support.hf_peft import inputs_for
from support.quantized import llama_for_quantization, quantized_llama


def _state(model: nn.Module) -> dict[str, Any]:
    """What the preparation changes: each parameter's dtype and flag, checkpointing, input grads."""
    ids = inputs_for("llama")
    return {
        "params": {name: (p.dtype, p.requires_grad, type(p).__name__) for name, p in model.named_parameters()},
        "checkpointing": any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()),
        "input_grads": bool(model.get_input_embeddings()(ids).requires_grad),  # type: ignore[operator]
    }


OPTIONS = [
    {},
    {"use_gradient_checkpointing": False},
    {"gradient_checkpointing_kwargs": {"use_reentrant": False}},
    {"gradient_checkpointing_kwargs": {"use_reentrant": True}},
]


@pytest.mark.parametrize("kind", ["nf4_double", "int8"])
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "no_checkpointing", "non_reentrant", "reentrant"])
def test_it_prepares_a_quantized_model_as_hf_does(kind: str, options: dict[str, Any]) -> None:
    ours = prepare_model_for_kbit_training(quantized_llama(kind, torch.bfloat16), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # it calls transformers' older name
        theirs = peft.prepare_model_for_kbit_training(quantized_llama(kind, torch.bfloat16), **options)
    state = _state(ours)
    assert state == _state(theirs)
    assert not any(flag for _, flag, _ in state["params"].values()), "everything is frozen"
    # Norms, embeddings and head in fp32; 4-bit weights stay packed.
    assert state["params"]["model.norm.weight"][0] == torch.float32
    assert state["params"]["lm_head.weight"][0] == torch.float32
    assert state["checkpointing"] == options.get("use_gradient_checkpointing", True)


def test_an_unquantized_model_is_frozen_and_cast_only() -> None:
    model = llama_for_quantization().to(torch.bfloat16)
    assert not is_quantized(model)
    state = _state(prepare_model_for_kbit_training(model))
    assert state == _state(peft.prepare_model_for_kbit_training(llama_for_quantization().to(torch.bfloat16)))
    assert not state["checkpointing"] and not state["input_grads"]
    assert {dtype for dtype, _, _ in state["params"].values()} == {torch.float32}


def test_a_prepared_4bit_model_trains_its_adapter_through_checkpointed_layers() -> None:
    model = prepare_model_for_kbit_training(
        quantized_llama("nf4_double"), gradient_checkpointing_kwargs={"use_reentrant": True}
    )
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.train()
    ids = inputs_for("llama")
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert len(grads) == 8 and all(g is not None for g in grads.values())
    assert all(bool(g.abs().sum() > 0) for n, g in grads.items() if "lora_B" in n)  # (A's are 0 while B is)
