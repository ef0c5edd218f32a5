"""Merging into a bitsandbytes-quantized weight: refused here, and what the incumbent's merge does instead.

Writing ``W + dW`` back into a 4-bit or 8-bit layer re-quantizes it. The incumbent does
so; measured on the tests' tiny Llama (adapter noise 0.1, outputs up to ~3): its merged
model is 0.40 (nf4), 0.67 (nf4 + double quantization), 1.06 (fp4) and 0.057 (int8) away
from the unmerged one, about the size of the quantization error itself (0.51, 0.51, 0.60,
0.034 from the float model), and its unmerge does not give the layer back (0.41, 0.66,
1.21, 0.061). Against its own reload of the adapter the incumbent shows 0: the tolerance
for parity of unmerged outputs (tests/bnb/test_bnb_interop.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")

import torch

from peft_core import MergeError, get_peft_model
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.hf_peft import Case, add_noise, hf_load, hf_model, inputs_for, outputs
from support.quantized import quantized_llama


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("nf4", LoraConfig(r=4, target_modules=["q_proj", "down_proj"])),
        ("int8", LoraConfig(r=4, target_modules=["q_proj", "down_proj"])),
        ("nf4_double", LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)),
        ("fp4", IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])),
    ],
    ids=["nf4-lora", "int8-lora", "nf4_double-dora", "fp4-ia3"],
)
def test_merging_into_a_quantized_weight_is_refused_and_changes_nothing(kind: str, config: object) -> None:
    model = get_peft_model(quantized_llama(kind), config)  # type: ignore[arg-type]
    add_noise(model)
    model.train()  # no repacking between the calls compared
    x = inputs_for("llama")
    with torch.no_grad():
        before = model(input_ids=x).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bits = 8 if kind == "int8" else 4
    reason = rf"bitsandbytes {bits}-bit weight is refused: .*re-quantizes.*merge on the base model loaded unquantized"
    with pytest.raises(MergeError, match=reason):
        model.merge_adapter()
    with pytest.raises(MergeError, match=reason):
        model.merge_and_unload()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, before, atol=0, rtol=0)


@pytest.mark.incumbent
@pytest.mark.parametrize("kind", ["nf4", "nf4_double", "fp4", "int8"])
def test_incumbent_merge_into_a_quantized_base_moves_the_outputs(kind: str, tmp_path: Path) -> None:
    base = quantized_llama(kind).train()  # train mode: no CPU repacking between the calls compared
    case = Case("llama", "lora", "merge", {"target_modules": ["q_proj", "v_proj", "down_proj"]})
    theirs = hf_model(base, case.theirs()).train()
    add_noise(theirs)
    x = inputs_for("llama")
    unmerged = outputs(theirs, x)
    theirs.save_pretrained(tmp_path)
    reloaded = hf_load(copy.deepcopy(base), tmp_path).train()
    assert torch.equal(outputs(reloaded, x), unmerged)  # its own reload: exact
    with pytest.warns(UserWarning, match="rounding errors"):
        theirs.merge_adapter()
    moved = float((outputs(theirs, x) - unmerged).abs().max())
    assert moved > 0.03, moved  # measured 0.057 (int8) to 1.06 (fp4)
