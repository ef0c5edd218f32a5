"""Hugging Face PEFT's arguments and return values on peft-core's functions (found by its test suite).

Each test calls the same function of both libraries the way the incumbent's users do and
compares what comes back.
"""

from __future__ import annotations

import peft
import pytest
import torch

import peft_core
from peft_lora import LoraConfig
from support.models import MLP, tiny_llama, token_ids


def _pair(**config: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**config))  # type: ignore[arg-type]
    ours = peft_core.get_peft_model(tiny_llama(), LoraConfig(**config))  # type: ignore[arg-type]
    return theirs, ours


def test_layer_status_names_are_relative_to_base_model_as_in_the_incumbent() -> None:
    theirs, ours = _pair(target_modules=["q_proj", "v_proj"])
    names = [s.name for s in peft_core.get_layer_status(ours)]
    assert names == [s.name for s in peft.get_layer_status(theirs)]
    assert names[0] == "model.model.layers.0.self_attn.q_proj"


def test_layer_status_names_of_injected_adapters_are_relative_to_the_module() -> None:
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(target_modules=["lin0"]), MLP())
    ours = peft_core.inject_adapter_in_model(LoraConfig(target_modules=["lin0"]), MLP())
    assert [s.name for s in peft_core.get_layer_status(ours)] == [s.name for s in peft.get_layer_status(theirs)]
    assert [s.name for s in peft_core.get_layer_status(ours)] == ["lin0"]
