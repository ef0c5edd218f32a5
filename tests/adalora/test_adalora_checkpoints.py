"""Pruned AdaLoRA adapters move between the libraries with identical outputs, both ways.

A pruned adapter is saved with only its surviving triplets and ``rank_pattern`` in its
config (the incumbent's format); loading builds each module at its pruned rank.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peft_adalora import AdaLoraConfig, SVDLinear
from peft_core import AdapterLoadError, PeftModel, get_peft_model
from peft_core.contract import adapter_layers
from support.adalora import Trainer, base, logits, options, pattern, twins
from support.hf_peft import hf_load
from support.models import token_ids

ATOL = 1e-5
STEPS = 24  # past the final allocation at step 22: the pattern is final


def _trained(model: nn.Module, steps: int = STEPS) -> Trainer:
    run = Trainer(model)
    for _ in range(steps):
        run.train_step()
    return run


def _ranks(model: PeftModel) -> dict[str, int]:
    layers = adapter_layers(model.get_base_model())
    return {path: layer.r["default"] for path, layer in layers if isinstance(layer, SVDLinear)}


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_an_incumbent_pruned_checkpoint_loads_here_at_its_pruned_ranks(model_name: str, tmp_path: Path) -> None:
    model = base(model_name)
    theirs, _ = twins(model, **options(model_name))
    _trained(theirs)
    theirs.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["rank_pattern"], "the incumbent saved no rank_pattern: a void test"
    ours = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path)
    config = ours.peft_config["default"]
    assert isinstance(config, AdaLoraConfig) and config.rank_pattern == saved["rank_pattern"]
    assert _ranks(ours) == {key.removesuffix(".lora_E"): sum(mask) for key, mask in saved["rank_pattern"].items()}
    assert min(_ranks(ours).values()) < config.init_r, "nothing pruned: a void test"
    ids = token_ids(batch=2, length=8, seed=3)
    expected = logits(theirs, ids)
    assert not torch.allclose(expected, logits(model, ids), atol=1e-3)
    torch.testing.assert_close(logits(ours, ids), expected, atol=ATOL, rtol=0)  # as trained there
    torch.testing.assert_close(logits(ours, ids), logits(hf_load(model, tmp_path), ids), atol=ATOL, rtol=0)
    on_disk = load_file(tmp_path / "adapter_model.safetensors")
    here = ours.base_model.adapter_state_dict("default")
    assert set(here) == set(on_disk)
    assert all(torch.equal(here[key], on_disk[key]) for key in on_disk)


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_our_pruned_checkpoint_loads_in_the_incumbent(model_name: str, tmp_path: Path) -> None:
    model = base(model_name)
    theirs, ours = twins(model, **options(model_name))
    _trained(ours)
    _trained(theirs)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    ours_file = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    theirs_file = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in ours_file.items()} == {k: v.shape for k, v in theirs_file.items()}
    for key, tensor in ours_file.items():  # the same training gives the same saved tensors
        torch.testing.assert_close(tensor, theirs_file[key], atol=1e-5, rtol=1e-4, msg=key)
    our_config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    their_config = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    assert our_config["rank_pattern"] == their_config["rank_pattern"]
    assert set(our_config) == set(their_config) - {"peft_version", "auto_mapping"}  # metadata
    loaded = hf_load(model, tmp_path / "ours")
    ids = token_ids(batch=2, length=8, seed=3)
    torch.testing.assert_close(logits(loaded, ids), logits(ours, ids), atol=ATOL, rtol=0)
    mine = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "ours")
    torch.testing.assert_close(logits(mine, ids), logits(ours, ids), atol=ATOL, rtol=0)
    assert _ranks(mine) == {k.removesuffix(".lora_E"): sum(m) for k, m in our_config["rank_pattern"].items()}


def test_an_unpruned_adapter_saves_every_triplet_and_no_pattern(tmp_path: Path) -> None:
    _, ours = twins(base("gpt2"), **options("gpt2"))
    _trained(ours, steps=5)  # warm-up only (tinit 4; the first allocation is at step 6)
    assert pattern(ours) is None
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["rank_pattern"] is None
    shapes = {k: tuple(v.shape) for k, v in load_file(tmp_path / "adapter_model.safetensors").items()}
    assert shapes["base_model.model.transformer.h.0.attn.c_attn.lora_A"] == (6, 32)
    assert shapes["base_model.model.transformer.h.0.attn.c_attn.lora_E"] == (6, 1)
    assert shapes["base_model.model.transformer.h.0.attn.c_attn.lora_B"] == (96, 6)


def test_a_fully_pruned_module_saves_and_loads_empty(tmp_path: Path) -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    config = ours.peft_config["default"]
    path = "transformer.h.0.attn.c_attn.lora_E"
    assert isinstance(config, AdaLoraConfig)
    everything = {f"{p}.lora_E": [True] * 6 for p, _ in adapter_layers(ours.get_base_model())}
    ours.base_model.peft_config["default"] = config.model_copy(
        update={"rank_pattern": everything | {path: [False] * 6}}
    )
    with torch.no_grad():
        for _, layer in adapter_layers(ours.get_base_model()):
            layer.lora_E["default"].normal_()
        ours.get_base_model().get_submodule(path.removesuffix(".lora_E")).lora_E["default"].zero_()
    ours.save_pretrained(tmp_path)
    assert load_file(tmp_path / "adapter_model.safetensors")[f"base_model.model.{path}"].shape == (0, 1)
    ids = token_ids(batch=2, length=8)
    for loaded in (PeftModel.from_pretrained(copy.deepcopy(model), tmp_path), hf_load(model, tmp_path)):
        torch.testing.assert_close(logits(loaded, ids), logits(ours, ids), atol=ATOL, rtol=0)


def test_merging_a_masked_or_pruned_adapter_is_exact(tmp_path: Path) -> None:
    model = base("llama")
    _, ours = twins(model, **options("llama"))
    _trained(ours)
    ids = token_ids(batch=2, length=8, seed=3)
    unmerged = logits(ours, ids)
    ours.save_pretrained(tmp_path)
    ours.merge_adapter()
    torch.testing.assert_close(logits(ours, ids), unmerged, atol=ATOL, rtol=0)
    ours.unmerge_adapter()
    pruned = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path)
    merged = pruned.merge_and_unload()
    torch.testing.assert_close(logits(merged, ids), unmerged, atol=ATOL, rtol=0)


def test_a_pattern_that_does_not_fit_the_checkpoint_is_one_load_error(tmp_path: Path) -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    _trained(ours)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    key = next(iter(saved["rank_pattern"]))
    saved["rank_pattern"][key] = [not kept for kept in saved["rank_pattern"][key]]  # another count of survivors
    if sum(saved["rank_pattern"][key]) == 3:
        saved["rank_pattern"][key][0] = not saved["rank_pattern"][key][0]
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    fresh = copy.deepcopy(model)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(AdapterLoadError, match=r"rank \d in checkpoint vs \d in config"):
        PeftModel.from_pretrained(fresh, tmp_path)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_saving_mid_schedule_writes_the_current_pattern_and_training_goes_on(tmp_path: Path) -> None:
    model = base("gpt2")
    theirs, ours = twins(model, **options("gpt2"))
    hf_run, our_run = _trained(theirs, steps=10), _trained(ours, steps=10)  # pruned at steps 6 and 9
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")  # (which strips the adapter name off its in-memory pattern)
    for _ in range(12):
        hf_run.train_step()
        our_run.train_step()
    assert pattern(ours) == pattern(theirs)
    ids = token_ids(batch=2, length=8, seed=3)
    torch.testing.assert_close(logits(ours, ids), logits(theirs, ids), atol=ATOL, rtol=0)
    ours_saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    theirs_saved = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    assert ours_saved["rank_pattern"] == theirs_saved["rank_pattern"]
    assert isinstance(peft.PeftConfig.from_pretrained(str(tmp_path / "ours")), peft.AdaLoraConfig)
    mid = get_peft_model(copy.deepcopy(model), AdaLoraConfig(**options("gpt2")))
    assert mid.peft_config["default"].rank_pattern is None  # the user's config object was not touched


def test_a_save_from_a_gathered_state_dict_writes_the_same_pruned_adapter(tmp_path: Path) -> None:
    # The route transformers' Trainer takes under FSDP/DeepSpeed: save_pretrained(state_dict=...).
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    _trained(ours, steps=10).train_step()
    assert pattern(ours)  # pruned: the saved tensors are cut to the surviving triplets
    ours.save_pretrained(tmp_path / "live")
    ours.save_pretrained(tmp_path / "gathered", state_dict=ours.state_dict())
    live = load_file(tmp_path / "live" / "adapter_model.safetensors")
    gathered = load_file(tmp_path / "gathered" / "adapter_model.safetensors")
    assert live.keys() == gathered.keys() and all(torch.equal(live[k], gathered[k]) for k in live)
