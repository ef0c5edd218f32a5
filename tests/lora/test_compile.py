"""torch.compile: LoRA adds no graph break, with several active adapters, in training and inference."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch._dynamo
from torch import nn

from peft_core import get_peft_model
from peft_lora import LoraConfig
from support.models import tiny_gpt2, tiny_llama, token_ids


def _breaks(model: nn.Module, train: bool) -> int:
    ids = token_ids()
    model.train(train)
    with torch.set_grad_enabled(train):
        kwargs = {"labels": ids} if train else {}
        return int(torch._dynamo.explain(model)(input_ids=ids, **kwargs).graph_break_count)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("train", [False, True])
def test_two_active_adapters_add_no_graph_break(build: Callable[[], nn.Module], train: bool) -> None:
    base_breaks = _breaks(build(), train)  # GPT-2's own loss code breaks once in training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build(), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        model.add_adapter("b", LoraConfig(r=2, lora_dropout=0.1, target_modules="all-linear"))
    model.set_adapter(["default", "b"])
    assert _breaks(model, train) == base_breaks


def test_per_row_adapters_compile_into_one_graph_equal_to_eager() -> None:
    """Under compile the per-row path takes its static schedule (gather per row): no graph
    break from the data-dependent grouping, same outputs as eager."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False))
        model.add_adapter("b", LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.eval()
    ids = token_ids(batch=4)
    names = ["b", "__base__", "default", "b"]
    with torch.no_grad():
        eager = model(input_ids=ids, adapter_names=names).logits
        explained = torch._dynamo.explain(model)(input_ids=ids, adapter_names=names)
        compiled = torch.compile(model, backend="eager")(input_ids=ids, adapter_names=names).logits
    assert explained.graph_break_count == 0
    assert torch.allclose(compiled, eager, atol=1e-5)
