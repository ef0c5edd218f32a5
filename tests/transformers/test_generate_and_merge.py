"""transformers models through the wrapper: generate, merged checkpoints, all-linear, eval on load."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from peft_core import PeftConfig, PeftModel
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, base_model, hf_load, hf_model, our_model, outputs
from support.models import token_ids

GREEDY = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}


def _padded_prompts() -> dict[str, torch.Tensor]:
    """Two prompts of 5 and 3 tokens, left-padded (as for batched generation)."""
    ids = token_ids(batch=2, length=5, seed=3).clamp(min=1)
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize(
    ("model", "targets"), [("gpt2", ["c_attn", "c_fc"]), ("llama", ["q_proj", "v_proj", "embed_tokens"])]
)
def test_generate_matches_hf_peft_and_the_merged_model(model: str, targets: list[str], tmp_path: Path) -> None:
    base = base_model(model)
    ours = our_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    prompts = _padded_prompts()
    generated = ours.generate(**prompts, **GREEDY)
    assert generated.shape == (2, 11)
    assert not torch.equal(generated, base.generate(**prompts, **GREEDY))
    assert torch.equal(generated, theirs.generate(**prompts, **GREEDY))
    with ours.disable_adapter():
        assert torch.equal(ours.generate(**prompts, **GREEDY), base.generate(**prompts, **GREEDY))
    assert torch.equal(ours.merge_and_unload().generate(**prompts, **GREEDY), generated)


def test_generate_with_an_adapter_per_row_matches_hf_peft(tmp_path: Path) -> None:
    base = base_model("llama")
    ours = our_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ours.add_adapter("other", LoraConfig(r=2, target_modules=["k_proj", "o_proj"], init_lora_weights=False))
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    theirs.load_adapter(str(tmp_path / "other"), adapter_name="other")
    prompts = {"input_ids": torch.cat([token_ids(batch=1, length=4)] * 3)}
    rows = ["other", "__base__", "default"]
    generated = ours.generate(**prompts, adapter_names=rows, **GREEDY)
    assert torch.equal(generated, theirs.generate(**prompts, adapter_names=rows, **GREEDY))
    for row, name in enumerate(rows):
        alone = ours.generate(input_ids=prompts["input_ids"][row : row + 1], adapter_names=[name], **GREEDY)
        assert torch.equal(generated[row : row + 1], alone)


CASES: dict[str, tuple[str, PeftConfig, type]] = {
    "gpt2-lora": ("gpt2", LoraConfig(r=4, target_modules=["c_attn", "c_proj", "c_fc"]), AutoModelForCausalLM),
    "gpt2-ia3": (
        "gpt2",
        IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"]),
        AutoModelForCausalLM,
    ),
    "llama-lora": ("llama", LoraConfig(r=4, target_modules="all-linear"), AutoModelForCausalLM),
    "llama_tied-lora": ("llama_tied", LoraConfig(r=4, target_modules=["q_proj", "down_proj"]), AutoModelForCausalLM),
    "bert-lora-modules_to_save": (
        "bert",
        LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], bias="lora_only"),
        AutoModelForSequenceClassification,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_merge_and_unload_saves_a_plain_transformers_checkpoint(case: str, tmp_path: Path) -> None:
    name, config, auto_class = CASES[case]
    base = base_model(name)
    model = our_model(base, config)
    add_noise(model)
    x = token_ids()
    unmerged = outputs(model, x)
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp_path)  # type: ignore[operator]
    saved = load_file(tmp_path / "model.safetensors")
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)  # type: ignore[operator]
    assert set(saved) == set(load_file(base_dir / "model.safetensors")), "not the base model's own keys"
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [type(base).__name__]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(base)
    assert torch.equal(outputs(reloaded, x), outputs(merged, x))
    torch.testing.assert_close(outputs(reloaded, x), unmerged, atol=1e-4, rtol=0)  # merge rounds once
    assert not torch.allclose(outputs(reloaded, x), outputs(base, x), atol=1e-3)
    if name == "llama_tied":
        assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight


def _adapted(model: nn.Module) -> set[str]:
    return {path.removeprefix("base_model.model.") for path, m in model.named_modules() if hasattr(m, "lora_A")}


@pytest.mark.parametrize(("model", "head"), [("gpt2", "lm_head"), ("llama", "lm_head"), ("llama_tied", "lm_head")])
def test_all_linear_excludes_the_output_head_as_hf_peft_does(model: str, head: str) -> None:
    base = base_model(model)
    ours = _adapted(our_model(base, LoraConfig(target_modules="all-linear")))
    assert head not in ours and len(ours) >= 8
    assert ours == _adapted(hf_model(base, peft.LoraConfig(target_modules="all-linear")))
    assert all(not path.endswith(head) for path in ours)


def test_an_adapter_loaded_for_inference_runs_in_eval_mode(tmp_path: Path) -> None:
    base = base_model("llama")
    trained = our_model(base, LoraConfig(r=4, target_modules=["q_proj"], lora_dropout=0.5, init_lora_weights=False))
    trained.save_pretrained(tmp_path)
    trained.eval()
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert not any(m.training for m in loaded.modules())
    x = token_ids()
    torch.testing.assert_close(outputs(loaded, x), outputs(trained, x), atol=ATOL, rtol=0)
    loaded.load_adapter(tmp_path, "again")
    assert not loaded.training
    trainable = PeftModel.from_pretrained(copy.deepcopy(base).train(), tmp_path, is_trainable=True)
    assert trainable.training  # a model loaded to train keeps its mode
