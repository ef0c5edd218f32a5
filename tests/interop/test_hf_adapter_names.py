"""The interop matrix, continued: adapter names (subfolders) and several adapters on one model.

Ids read ``<direction>[<model>-<method>-<feature>]`` like the cells of test_hf_checkpoints.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from peft_core import PeftModel
from support.hf_peft import (
    ATOL,
    Case,
    assert_same_outputs,
    base_model,
    hf_load,
    hf_model,
    inputs_for,
    our_model,
    outputs,
)

FIRST = {
    "gpt2": {"target_modules": ["c_attn", "c_fc"]},
    "bert": {"target_modules": ["query", "value"], "modules_to_save": ["classifier"]},
    "llama": {"target_modules": ["q_proj", "v_proj", "embed_tokens"]},
}
SECOND = {
    "gpt2": {"target_modules": ["c_proj"], "r": 2},
    "bert": {"target_modules": ["key", "dense"], "r": 2, "modules_to_save": ["classifier"]},
    "llama": {"target_modules": ["k_proj", "up_proj"], "r": 2, "use_rslora": True},
}
IA3_FIRST = {"target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"]}
IA3_SECOND = {"target_modules": ["c_fc"]}

NAMED = [Case(model, "lora", "adapter_named_fr", FIRST[model]) for model in FIRST]
SEVERAL = [(Case(m, "lora", "two_adapters", FIRST[m]), Case(m, "lora", "", SECOND[m])) for m in FIRST]
SEVERAL.append((Case("gpt2", "ia3", "two_adapters", IA3_FIRST), Case("gpt2", "ia3", "", IA3_SECOND)))
SEVERAL_IDS = [first.id for first, _ in SEVERAL]


def _switch(model: torch.nn.Module, name: str | list[str]) -> None:
    # Hugging Face PEFT's PeftModel.set_adapter takes one name; its tuner takes a list.
    model.base_model.set_adapter(name)


@pytest.mark.parametrize("case", NAMED, ids=lambda case: case.id)
def test_hf_saves_we_load(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    theirs = hf_model(base, case.theirs(), adapter_name="fr")
    theirs.save_pretrained(tmp_path)
    # A non-default name is a subfolder (Hugging Face adds a README.md model card at the root).
    assert not (tmp_path / "adapter_model.safetensors").exists()
    assert (tmp_path / "fr" / "adapter_model.safetensors").is_file()
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "fr", adapter_name="fr")
    assert ours.active_adapters == ["fr"]
    assert_same_outputs(ours, theirs, base, inputs_for(case.model))


@pytest.mark.parametrize("case", NAMED, ids=lambda case: case.id)
def test_we_save_hf_loads(case: Case, tmp_path: Path) -> None:
    base = base_model(case)
    ours = our_model(base, case.ours(), adapter_name="fr")
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "fr"]
    theirs = hf_load(base, tmp_path / "fr", adapter_name="fr")
    assert_same_outputs(ours, theirs, base, inputs_for(case.model))


def _compare_each_adapter(ours: PeftModel, theirs: torch.nn.Module, base: torch.nn.Module, model: str) -> None:
    x = inputs_for(model)
    for name in ("default", "second"):
        ours.set_adapter(name)
        _switch(theirs, name)
        assert_same_outputs(ours, theirs, base, x)
    if "bert" not in model:  # two copies of one modules_to_save module cannot be active together
        ours.set_adapter(["default", "second"])
        _switch(theirs, ["default", "second"])
        torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("first", "second"), SEVERAL, ids=SEVERAL_IDS)
def test_hf_saves_we_load_several(first: Case, second: Case, tmp_path: Path) -> None:
    base = base_model(first)
    theirs = hf_model(base, first.theirs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_adapter("second", second.theirs())
    theirs.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert (tmp_path / "second" / "adapter_model.safetensors").is_file()
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ours.load_adapter(tmp_path / "second", "second")
    _compare_each_adapter(ours, theirs, base, first.model)


@pytest.mark.parametrize(("first", "second"), SEVERAL, ids=SEVERAL_IDS)
def test_we_save_hf_loads_several(first: Case, second: Case, tmp_path: Path) -> None:
    base = base_model(first)
    ours = our_model(base, first.ours())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.add_adapter("second", second.ours())
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    theirs.load_adapter(str(tmp_path / "second"), adapter_name="second")
    _compare_each_adapter(ours, theirs, base, first.model)


@pytest.mark.parametrize("model", ["gpt2", "llama"], ids=lambda model: f"{model}-lora-per_row_adapter_names")
def test_per_row_adapters_match_hf(model: str, tmp_path: Path) -> None:
    """The same mixed batch (``adapter_names`` per row) in both libraries, from one checkpoint."""
    base = base_model(model)
    ours = our_model(base, Case(model, "lora", "", FIRST[model]).ours())
    ours.add_adapter("second", Case(model, "lora", "", SECOND[model]).ours())
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    theirs.load_adapter(str(tmp_path / "second"), adapter_name="second")
    x = torch.cat([inputs_for(model)] * 2)[:3]
    rows = ["second", "__base__", "default"]
    with torch.no_grad():
        mixed = ours(input_ids=x, adapter_names=rows).logits
        expected = theirs(input_ids=x, adapter_names=rows).logits
    assert not torch.allclose(mixed[0], mixed[2], atol=1e-3)
    torch.testing.assert_close(mixed, expected, atol=ATOL, rtol=0)
