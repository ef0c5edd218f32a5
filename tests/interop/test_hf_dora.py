"""DoRA adapters move between Hugging Face PEFT and peft-core (peft-dora) with identical numbers.

Each case: saved by one library, loaded by the other; outputs equal (fp32, atol 1e-5)
with the adapter on and off, after ``merge_adapter`` and after ``unmerge_adapter``; the
same training step gives the same gradients for every adapter tensor.
"""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core import PeftModel
from support.hf_peft import (
    ATOL,
    Case,
    add_noise,
    assert_same_outputs,
    base_model,
    hf_load,
    hf_model,
    inputs_for,
    our_model,
    outputs,
)

# Merged against unmerged: a merged weight rounds differently, and logits of 2 layers add it up.
MERGE_ATOL = 1e-4
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def dora(model: str, feature: str, **options: object) -> Case:
    return Case(model, "lora", f"dora_{feature}", {"use_dora": True} | options)


CASES = [
    dora("llama", "linear", target_modules=LLAMA_LINEAR),
    dora("llama", "embedding", target_modules=["embed_tokens", "q_proj"]),
    dora("llama", "rslora_patterns", target_modules=["q_proj", "v_proj"], use_rslora=True, rank_pattern={"v_proj": 2}),
    # GPT-2's Conv1D stores weights (in, out): the norm runs over the other dimension.
    dora("gpt2", "conv1d_fan_in_fan_out", target_modules=["c_attn", "c_proj", "c_fc"]),
    # BERT's linears have biases (DoRA scales W x, not the bias) and a classifier head.
    dora("bert", "linear_bias", target_modules=["query", "value", "dense"], modules_to_save=["classifier"]),
    dora("bert", "bias_lora_only", target_modules=["query", "value"], bias="lora_only"),
    dora("convnet", "conv1d_conv2d", target_modules=["conv1d", "conv2d"]),
]


def _check_merged_and_unmerged(ours: PeftModel, theirs: nn.Module, x: Tensor) -> None:
    unmerged = outputs(ours, x)
    ours.merge_adapter()
    theirs.merge_adapter()  # type: ignore[operator]
    merged = outputs(ours, x)
    torch.testing.assert_close(merged, outputs(theirs, x), atol=ATOL, rtol=0)
    torch.testing.assert_close(merged, unmerged, atol=MERGE_ATOL, rtol=0)
    ours.unmerge_adapter()
    theirs.unmerge_adapter()  # type: ignore[operator]
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hf_saves_we_load(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    theirs = hf_model(base, case.theirs())
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = inputs_for(case.model)
    assert_same_outputs(ours, theirs, base, x)
    _check_merged_and_unmerged(ours, theirs, x)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_we_save_hf_loads(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    ours = our_model(base, case.ours())
    add_noise(ours)
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    x = inputs_for(case.model)
    assert_same_outputs(ours, theirs, base, x)
    held = peft.get_peft_model_state_dict(theirs)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert any(key.endswith("lora_magnitude_vector") for key in saved)
    for key, tensor in saved.items():
        assert key in held, f"Hugging Face PEFT ignored {key}"
        assert torch.equal(held[key], tensor), key
    _check_merged_and_unmerged(ours, theirs, x)


@pytest.mark.parametrize("case", CASES[:5], ids=lambda case: case.id)
def test_a_fresh_adapter_has_hf_magnitudes(case: Case) -> None:
    """Same seed, same base: the magnitudes both libraries initialise are the base weight's norms."""
    base = base_model(case)
    options = {"init_lora_weights": True} | {k: v for k, v in case.options.items() if k != "modules_to_save"}
    ours = our_model(base, Case(case.model, "lora", case.feature, options).ours())
    theirs = hf_model(base, Case(case.model, "lora", case.feature, options).theirs())
    mine = {k: v for k, v in ours.base_model.adapter_state_dict("default").items() if "magnitude" in k}
    held = peft.get_peft_model_state_dict(theirs)
    assert mine and all(torch.allclose(mine[k], held[k], atol=1e-6, rtol=0) for k in mine)


def _hf_key(name: str) -> str:
    """A Hugging Face PEFT parameter name as its checkpoint key (adapter name out, magnitude's .weight out)."""
    key = name.replace(".modules_to_save.default.", ".").replace(".default.", ".").removesuffix(".default")
    return key.removesuffix(".weight") if key.endswith("lora_magnitude_vector.weight") else key


def _loss(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x) if x.is_floating_point() else model(input_ids=x).logits
    return out.float().pow(2).mean()


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[6]], ids=lambda case: case.id)
def test_training_gives_the_same_gradients_as_hf(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    theirs = hf_model(base, case.theirs())
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    x = inputs_for(case.model)
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(0)  # the same dropout masks in the base model (GPT-2, BERT)
        _loss(model, x).backward()
    expected = {_hf_key(n): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    got = {k: t.grad for k, t in ours.base_model.adapter_state_dict("default").items()}
    assert set(got) == set(expected)
    assert any("magnitude" in k for k in got)
    for key, grad in got.items():
        assert grad is not None and expected[key] is not None, key
        torch.testing.assert_close(grad, expected[key], atol=1e-6, rtol=1e-4, msg=key)


def test_dropout_in_training_matches_hf_mask_for_mask(tmp_path: Path) -> None:
    """With lora_dropout the DoRA terms see the dropped input (the incumbent's formula), same RNG draws."""
    case = dora("bert", "dropout", target_modules=["query", "value"], lora_dropout=0.3)
    base = base_model(case)
    theirs = hf_model(base, case.theirs())
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    x = inputs_for(case.model)
    results = []
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(7)
        results.append(model(input_ids=x).logits)
    torch.testing.assert_close(results[0], results[1], atol=ATOL, rtol=0)
    ours.eval()
    torch.manual_seed(8)
    assert not torch.allclose(ours(input_ids=x).logits, results[0], atol=1e-4), "dropout had no effect"


def test_two_active_dora_adapters_compose_as_in_hf(tmp_path: Path) -> None:
    """Several active adapters: each scales what the ones before it produced (HF's order), merged alike."""
    base = base_model("llama")
    config = dora("llama", "two", target_modules=["q_proj", "v_proj"])
    theirs = hf_model(base, config.theirs())
    theirs.add_adapter("second", dora("llama", "two", target_modules=["v_proj"], r=2).theirs())
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ours.load_adapter(tmp_path / "second", "second")
    ours.set_adapter(["default", "second"])
    theirs.base_model.set_adapter(["default", "second"])
    x = inputs_for("llama")
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)
    _check_merged_and_unmerged(ours, theirs, x)
