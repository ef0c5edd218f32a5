"""Hugging Face PEFT's arguments and return values on peft-core's functions (found by its test suite).

Each test calls the same function of both libraries the way the incumbent's users do and
compares what comes back.
"""

from __future__ import annotations

from pathlib import Path

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


def test_get_peft_model_state_dict_takes_a_full_state_dict_by_keyword() -> None:
    theirs, ours = _pair(target_modules=["q_proj"], init_lora_weights=False)
    full = {k: v.clone() + 1 for k, v in ours.state_dict().items()}  # as a trainer would gather it
    picked = peft_core.get_peft_model_state_dict(ours, state_dict=full, unwrap_compiled=True)
    reference = peft.get_peft_model_state_dict(theirs, state_dict=theirs.state_dict(), unwrap_compiled=True)
    assert sorted(picked) == sorted(reference)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    live = peft_core.get_peft_model_state_dict(ours)[key]
    assert torch.equal(picked[key], live + 1)


def test_set_peft_model_state_dict_takes_the_incumbents_keywords() -> None:
    theirs, _ = _pair(target_modules=["q_proj"], init_lora_weights=False)
    saved = peft.get_peft_model_state_dict(theirs)
    fresh = peft_core.get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"]))
    report = peft_core.set_peft_model_state_dict(fresh, saved, low_cpu_mem_usage=True, ignore_mismatched_sizes=False)
    assert report.unexpected_keys == [] and report.missing_keys == []
    torch.testing.assert_close(fresh(token_ids()).logits, theirs(token_ids()).logits, atol=1e-5, rtol=0)


def test_ignore_mismatched_sizes_leaves_tensors_of_another_shape_out_with_a_warning() -> None:
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=4))
    saved = peft.get_peft_model_state_dict(theirs)
    saved = {k: (torch.ones(8, 32) if k.endswith("0.self_attn.q_proj.lora_A.weight") else v) for k, v in saved.items()}
    ours = peft_core.get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "v_proj"], r=4))
    with pytest.raises(peft_core.AdapterLoadError, match="rank 8 in checkpoint vs 4"):
        peft_core.set_peft_model_state_dict(ours, saved)
    before = ours.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.clone()
    with pytest.warns(UserWarning, match="ignore_mismatched_sizes: not loaded"):
        peft_core.set_peft_model_state_dict(ours, saved, ignore_mismatched_sizes=True)
    after = ours.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert torch.equal(after, before)  # left as it was
    v_key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    assert torch.equal(peft_core.get_peft_model_state_dict(ours)[v_key], saved[v_key])  # the rest was loaded


def test_set_base_model_state_dict_returns_missing_and_unexpected_keys_as_the_incumbent() -> None:
    theirs, ours = _pair(target_modules="all-linear")
    state = peft_core.get_base_model_state_dict(ours)
    state.pop("lm_head.weight")
    state["extra.weight"] = torch.zeros(1)
    outcome = peft_core.set_base_model_state_dict(ours, state, strict=False)
    reference = peft.set_base_model_state_dict(theirs, state, strict=False)
    assert outcome.missing_keys == list(reference.missing_keys) == ["lm_head.weight"]
    assert outcome.unexpected_keys == list(reference.unexpected_keys) == ["extra.weight"]


def test_hotswap_adapter_takes_torch_device(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    trained = peft.get_peft_model(tiny_llama(), peft.LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    trained.save_pretrained(folder)
    ours = peft_core.get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"]))
    peft_core.hotswap_adapter(ours, folder, adapter_name="default", torch_device="cpu")
    torch.testing.assert_close(ours(token_ids()).logits, trained(token_ids()).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("call", ["set_adapter", "delete_adapter"])
def test_an_unknown_adapter_name_is_a_value_error_as_in_the_incumbent(call: str) -> None:
    theirs, ours = _pair(target_modules=["q_proj"])
    with pytest.raises(ValueError, match="unknown-adapter"):
        getattr(theirs, call)("unknown-adapter")
    with pytest.raises(peft_core.AdapterNotFoundError, match="unknown adapters? .*unknown-adapter.*'default'"):
        getattr(ours, call)("unknown-adapter")
    assert issubclass(peft_core.AdapterNotFoundError, ValueError)


def test_an_unknown_name_in_adapter_names_is_a_value_error_as_in_the_incumbent() -> None:
    _, ours = _pair(target_modules=["q_proj"])
    with pytest.raises(ValueError, match=r"unknown adapters \['does-not-exist'\]"):
        ours(token_ids(), adapter_names=["default", "does-not-exist"])
