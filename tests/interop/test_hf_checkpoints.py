"""The interop matrix: one adapter per cell, saved by one library and loaded by the other.

Test ids read ``<direction>[<model>-<method>-<feature>]``; each cell asserts equal outputs
(fp32, atol 1e-5) with the adapter on, different from the base model, and equal outputs
with adapters disabled. Run ``pytest tests/interop -v`` to print the matrix.
"""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file

from peft_core import PeftModel
from support.hf_peft import Case, add_noise, assert_same_outputs, base_model, hf_load, hf_model, inputs_for, our_model

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = [
    # GPT-2: transformers Conv1D layers (weights stored (in, out): fan_in_fan_out).
    Case("gpt2", "lora", "conv1d_fan_in_fan_out", {"target_modules": ["c_attn", "c_proj", "c_fc"]}),
    Case("gpt2", "lora", "embedding", {"target_modules": ["wte", "c_attn"]}),
    Case("gpt2", "lora", "rslora", {"target_modules": ["c_attn", "c_fc"], "use_rslora": True}),
    Case(
        "gpt2",
        "lora",
        "rank_alpha_pattern",
        {"target_modules": ["c_attn", "c_fc"], "rank_pattern": {"c_fc": 2}, "alpha_pattern": {"h.1.attn.c_attn": 32}},
    ),
    Case("gpt2", "lora", "bias_lora_only", {"target_modules": ["c_attn"], "bias": "lora_only"}),
    Case("gpt2", "lora", "all_linear", {"target_modules": "all-linear"}),
    Case(
        "gpt2",
        "ia3",
        "feedforward",
        {"target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"]},
    ),
    # Hugging Face fills feedforward_modules from its own table (["mlp.c_proj"], not a target here).
    Case("gpt2", "ia3", "hf_default_feedforward", {"target_modules": ["c_attn", "c_fc"]}),
    # BERT: nn.Linear, a classifier head.
    Case("bert", "lora", "linear", {"target_modules": ["query", "value", "dense"]}),
    Case("bert", "lora", "embedding", {"target_modules": ["word_embeddings", "query"]}),
    Case("bert", "lora", "modules_to_save", {"target_modules": ["query", "value"], "modules_to_save": ["classifier"]}),
    # task_type SEQ_CLS: Hugging Face writes modules_to_save=["classifier", "score"].
    Case("bert", "lora", "seq_cls_task", {"target_modules": ["query", "value"], "task_type": "SEQ_CLS"}),
    Case("bert", "lora", "bias_lora_only", {"target_modules": ["query", "value"], "bias": "lora_only"}),
    # bias="all" + modules_to_save: Hugging Face adds classifier.{original_module,modules_to_save}.bias.
    Case(
        "bert",
        "lora",
        "bias_all_modules_to_save",
        {"target_modules": ["query", "value"], "bias": "all", "modules_to_save": ["classifier"]},
    ),
    Case(
        "bert",
        "lora",
        "rslora_rank_alpha_pattern",
        {
            "target_modules": ["query", "value"],
            "use_rslora": True,
            "rank_pattern": {"value": 2},
            "alpha_pattern": {"query": 3},
        },
    ),
    Case(
        "bert",
        "ia3",
        "feedforward_modules_to_save",
        {
            "target_modules": ["key", "value", "output.dense"],
            "feedforward_modules": ["output.dense"],
            "modules_to_save": ["classifier"],
        },
    ),
    # Llama: nn.Linear everywhere, grouped-query attention, an untied lm_head.
    Case("llama", "lora", "linear", {"target_modules": LLAMA_LINEAR}),
    Case("llama", "lora", "embedding", {"target_modules": ["embed_tokens", "q_proj"]}),
    Case("llama", "lora", "modules_to_save", {"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}),
    Case(
        "llama",
        "lora",
        "rslora_rank_alpha_pattern",
        {
            "target_modules": ["q_proj", "v_proj", "down_proj"],
            "use_rslora": True,
            "rank_pattern": {"down_proj": 2},
            "alpha_pattern": {"layers.0.self_attn.q_proj": 16},
        },
    ),
    Case("llama", "lora", "all_linear", {"target_modules": "all-linear"}),
    Case(
        "llama",
        "ia3",
        "feedforward",
        {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
    ),
    # tie_word_embeddings=True: embed_tokens and lm_head share one weight (adapters stay unmerged).
    Case("llama_tied", "lora", "linear", {"target_modules": ["q_proj", "v_proj"]}),
    Case("llama_tied", "lora", "embedding", {"target_modules": ["embed_tokens", "q_proj"]}),
    Case("llama_tied", "lora", "lm_head", {"target_modules": ["lm_head", "q_proj"]}),
    # Plain torch convolutions (no transformers model has them): nn.Conv1d and nn.Conv2d.
    Case("convnet", "lora", "conv1d_conv2d", {"target_modules": ["conv1d", "conv2d"]}),
    # Hugging Face PEFT has no IA3 layer for nn.Conv1d.
    Case("convnet", "ia3", "conv2d", {"target_modules": ["conv2d"], "feedforward_modules": ["conv2d"]}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hf_saves_we_load(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    theirs = hf_model(base, case.theirs())
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert_same_outputs(ours, theirs, base, inputs_for(case.model))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_we_save_hf_loads(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    ours = our_model(base, case.ours())
    add_noise(ours)
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    assert_same_outputs(ours, theirs, base, inputs_for(case.model))
    # Every tensor we wrote is one Hugging Face PEFT holds for the adapter, with our values.
    held = peft.get_peft_model_state_dict(theirs)
    for key, tensor in load_file(tmp_path / "adapter_model.safetensors").items():
        assert key in held, f"Hugging Face PEFT ignored {key}"
        assert torch.equal(held[key], tensor), key
