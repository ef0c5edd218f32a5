"""LoHa, LoKr and OFT adapters saved by one library and loaded by the other (the interop matrix).

Each cell: outputs equal (fp32, atol 1e-5) with the adapter on (and different from the base
model) and off, and after merging in both libraries; the tensors we write are the ones
Hugging Face PEFT holds. Test ids read ``<direction>[<model>-<method>-<feature>]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peft_oft import PatchConv2d
from support.hf_peft import (
    ATOL,
    Case,
    add_noise,
    assert_same_outputs,
    base_model,
    hf_load,
    inputs_for,
    our_model,
    outputs,
    saved_by_hf,
)

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONVMIX = ["point", "grouped", "seq", "seq_point", "head"]
PATTERNS = {"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"layers.0.self_attn.q_proj": 16}}

CASES = [
    # LoHa: hada_w* (and hada_t* with use_effective_conv2d).
    Case("llama", "loha", "linear", {"target_modules": LLAMA_LINEAR}),
    Case("llama", "loha", "rank_alpha_pattern", {"target_modules": ["q_proj", "v_proj", "down_proj"], **PATTERNS}),
    Case(
        "llama",
        "loha",
        "dropouts",
        {"target_modules": ["q_proj", "v_proj"], "rank_dropout": 0.2, "module_dropout": 0.3},
    ),
    Case("convnet", "loha", "conv1d_conv2d_linear", {"target_modules": ["conv1d", "conv2d", "head"]}),
    Case("convnet", "loha", "effective_conv", {"target_modules": ["conv1d", "conv2d"], "use_effective_conv2d": True}),
    Case("convmix", "loha", "pointwise_grouped", {"target_modules": CONVMIX, "use_effective_conv2d": True}),
    # LoKr: r decides which factor is a product (w2 when r < max(b, d) / 2, w1 with decompose_both).
    Case("llama", "lokr", "linear_full_w2", {"target_modules": LLAMA_LINEAR}),
    Case("llama", "lokr", "linear_low_rank_w2", {"target_modules": LLAMA_LINEAR, "r": 2}),
    Case("llama", "lokr", "decompose_both", {"target_modules": ["q_proj", "up_proj"], "r": 1, "decompose_both": True}),
    Case(
        "llama",
        "lokr",
        "decompose_factor_patterns",
        {"target_modules": LLAMA_LINEAR, "decompose_factor": 4, **PATTERNS},
    ),
    Case(
        "llama",
        "lokr",
        "lycoris_init_dropouts",
        {
            "target_modules": ["q_proj", "v_proj"],
            "init_weights": "lycoris",
            "rank_dropout": 0.2,
            "rank_dropout_scale": True,
            "module_dropout": 0.1,
        },
    ),
    # r=4 on ConvNet: a full lokr_w2, 3-D for the Conv1d (PEFT's kron of a 2-D and a 3-D tensor).
    Case("convnet", "lokr", "conv_full_w2", {"target_modules": ["conv1d", "conv2d", "head"]}),
    Case("convnet", "lokr", "conv_low_rank_w2", {"target_modules": ["conv1d", "conv2d"], "r": 1}),
    # (Hugging Face PEFT cannot run LoKr's effective conv on a Conv1d: its kron fails; tests/lokr covers ours.)
    Case("convnet", "lokr", "effective_conv2d", {"target_modules": ["conv2d"], "r": 1, "use_effective_conv2d": True}),
    Case("convmix", "lokr", "pointwise_grouped", {"target_modules": CONVMIX, "r": 1}),
    Case(
        "convmix",
        "lokr",
        "grouped_effective",
        {"target_modules": ["point", "grouped"], "r": 1, "use_effective_conv2d": True},
    ),
    # OFT: oft_R.weight, (blocks, b (b - 1) / 2).
    Case("llama", "oft", "linear", {"target_modules": LLAMA_LINEAR, "oft_block_size": 8}),
    Case("llama", "oft", "r_given", {"target_modules": LLAMA_LINEAR, "r": 4, "oft_block_size": 0}),
    Case("llama", "oft", "block_share", {"target_modules": LLAMA_LINEAR, "oft_block_size": 8, "block_share": True}),
    Case(
        "llama",
        "oft",
        "coft",
        {"target_modules": ["q_proj", "down_proj"], "oft_block_size": 8, "coft": True, "eps": 0.1},
    ),
    Case(
        "llama",
        "oft",
        "exact_cayley",
        {"target_modules": LLAMA_LINEAR, "oft_block_size": 8, "use_cayley_neumann": False},
    ),
    Case(
        "llama",
        "oft",
        "neumann_3_terms",
        {"target_modules": ["q_proj"], "oft_block_size": 4, "num_cayley_neumann_terms": 3},
    ),
    Case(
        "llama",
        "oft",
        "module_dropout",
        {"target_modules": ["q_proj", "v_proj"], "oft_block_size": 8, "module_dropout": 0.5},
    ),
    Case("llama", "oft", "embedding", {"target_modules": ["embed_tokens", "q_proj"], "oft_block_size": 8}),
    Case("llama", "oft", "adjusted_block_size", {"target_modules": ["q_proj", "down_proj"], "oft_block_size": 5}),
    Case(
        "convnet",
        "oft",
        "conv2d_linear_bias",
        {"target_modules": ["conv2d", "head"], "oft_block_size": 4, "bias": "oft_only"},
    ),
    Case("convmix", "oft", "pointwise_grouped", {"target_modules": ["point", "grouped", "head"], "oft_block_size": 2}),
    Case(
        "convmix",
        "oft",
        "conv_block_share_coft",
        {"target_modules": ["point", "grouped"], "oft_block_size": 2, "block_share": True, "coft": True, "eps": 0.1},
    ),
]


def _mergeable(model: nn.Module) -> bool:
    """False where OFT wraps a Conv2d with a kernel > 1: Hugging Face PEFT's merge changes its outputs there."""
    return not any(isinstance(m, PatchConv2d) for m in model.modules())


def _assert_same_merged(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Merged in both libraries: equal outputs; unmerged again: ours back to its unmerged outputs."""
    if not _mergeable(ours):
        return
    unmerged = outputs(ours, x)
    ours.merge_adapter()  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.merge_adapter()  # type: ignore[operator]
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)
    ours.unmerge_adapter()  # type: ignore[operator]
    torch.testing.assert_close(outputs(ours, x), unmerged, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hf_saves_we_load(case: Case, tmp_path: Path) -> None:
    base, theirs, ours = saved_by_hf(case, tmp_path)
    theirs.eval()  # its new layers are in training mode (dropouts on) until asked
    x = inputs_for(case.model)
    assert_same_outputs(ours, theirs, base, x)
    _assert_same_merged(ours, theirs, x)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_we_save_hf_loads(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    ours = our_model(base, case.ours())
    add_noise(ours)
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path).eval()
    ours.eval()
    held = peft.get_peft_model_state_dict(theirs)  # before a forward: PEFT's COFT projects in place there
    for key, tensor in load_file(tmp_path / "adapter_model.safetensors").items():
        assert key in held, f"Hugging Face PEFT ignored {key}"
        assert torch.equal(held[key], tensor), key
    x = inputs_for(case.model)
    assert_same_outputs(ours, theirs, base, x)
    _assert_same_merged(ours, theirs, x)
