"""PiSSA and OLoRA move part of the base weight into the adapter: the model starts as the base model,
a saved adapter reloads onto the original base in both libraries with the trained outputs, and
``path_initial_model_for_weight_conversion`` turns it into a plain LoRA of the original base."""

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

from peft_core import ConfigError, PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, disabled, outputs
from support.models import ConvNet, tiny_gpt2, tiny_llama, token_ids

CASES = [
    ("llama", "pissa", ["q_proj", "v_proj", "down_proj", "embed_tokens"]),
    ("llama", "olora", ["q_proj", "v_proj", "down_proj"]),
    ("gpt2", "pissa", ["c_attn", "c_proj"]),
]
BUILD = {"llama": tiny_llama, "gpt2": tiny_gpt2}


def _trained(library: str, base: nn.Module, init: str, targets: list[str]) -> nn.Module:
    settings = {"r": 4, "lora_alpha": 8, "target_modules": targets, "init_lora_weights": init}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices
        if library == "hf":
            model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
        else:
            model = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))
    add_noise(model)
    return model.eval()


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_3", "olora"])
def test_the_model_starts_as_the_base_model(init: str) -> None:
    base = tiny_llama()
    model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=init)
    )
    x = token_ids(batch=2, length=8)
    torch.testing.assert_close(outputs(model, x), outputs(base, x), atol=1e-5, rtol=0)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    original = base.model.layers[0].self_attn.q_proj.weight
    assert (q_proj.base_layer.weight - original).abs().max() > 0.01  # the base really was split
    with disabled(model):  # the residual base alone: not the base model
        assert not torch.allclose(outputs(model, x), outputs(base, x), atol=1e-3)


@pytest.mark.parametrize(("model_name", "init", "targets"), CASES, ids=[f"{m}-{i}" for m, i, _ in CASES])
def test_saved_adapters_reload_onto_the_original_base_both_ways(
    model_name: str, init: str, targets: list[str], tmp_path: Path
) -> None:
    base = BUILD[model_name]()
    x = token_ids(batch=2, length=8)
    for saver, loader in (("hf", "ours"), ("ours", "hf")):
        trained = _trained(saver, base, init, targets)
        trained.save_pretrained(tmp_path / saver)
        assert json.loads((tmp_path / saver / "adapter_config.json").read_text())["init_lora_weights"] == init
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if loader == "hf":
                loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / saver)
            else:
                loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / saver)
        assert not torch.allclose(outputs(trained, x), outputs(base, x), atol=1e-3), "a void test"
        torch.testing.assert_close(outputs(loaded, x), outputs(trained, x), atol=ATOL, rtol=0)
        with disabled(loaded), disabled(trained):  # the same residual base
            torch.testing.assert_close(outputs(loaded, x), outputs(trained, x), atol=ATOL, rtol=0)


def test_merged_and_unloaded_pissa_model_keeps_the_outputs() -> None:
    model = _trained("ours", tiny_llama(), "pissa", ["q_proj", "v_proj"])
    x = token_ids(batch=2, length=8)
    expected = outputs(model, x)
    model.merge_adapter()
    torch.testing.assert_close(outputs(model, x), expected, atol=ATOL, rtol=0)
    model.unmerge_adapter()
    torch.testing.assert_close(outputs(model, x), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(outputs(model.merge_and_unload(), x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("model_name", "init", "targets"), CASES, ids=[f"{m}-{i}" for m, i, _ in CASES])
def test_conversion_to_plain_lora_matches_the_incumbent_and_loads_onto_the_original_base(
    model_name: str, init: str, targets: list[str], tmp_path: Path
) -> None:
    base = BUILD[model_name]()
    x = token_ids(batch=2, length=8)
    written = {}
    for library in ("hf", "ours"):
        settings = {"r": 4, "lora_alpha": 8, "target_modules": targets, "init_lora_weights": init}
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if library == "hf":
                model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
            else:
                model = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))
            model.save_pretrained(tmp_path / library / "initial")
            add_noise(model)
            model.save_pretrained(
                tmp_path / library / "lora", path_initial_model_for_weight_conversion=tmp_path / library / "initial"
            )
        written[library] = model.eval()
    config = json.loads((tmp_path / "ours" / "lora" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 16, True)
    ours = load_file(tmp_path / "ours" / "lora" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "hf" / "lora" / "adapter_model.safetensors")
    assert set(theirs) <= set(ours)  # the incumbent's conversion drops Embedding factors
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, atol=0, rtol=0)
    expected = outputs(written["ours"], x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loaded in (
            PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours" / "lora"),
            peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours" / "lora"),
        ):
            torch.testing.assert_close(outputs(loaded, x), expected, atol=1e-4, rtol=0)  # two fp32 roundings apart
            with disabled(loaded):  # the original base this time
                torch.testing.assert_close(outputs(loaded, x), outputs(base, x), atol=ATOL, rtol=0)


def test_reloading_a_randomized_pissa_adapter_warns(tmp_path: Path) -> None:
    model = _trained("ours", tiny_llama(), "pissa_niter_2", ["q_proj"])
    model.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="randomized SVD.*path_initial_model_for_weight_conversion"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


@pytest.mark.parametrize(
    ("build", "config", "message"),
    [
        (ConvNet, LoraConfig(target_modules=["conv2d"], init_lora_weights="pissa"), "not defined for convolutions"),
        (ConvNet, LoraConfig(r=2, target_modules=["conv1d"], init_lora_weights="orthogonal"), "convolutions"),
        (tiny_gpt2, LoraConfig(target_modules=["c_attn"], init_lora_weights="olora"), "transformers Conv1D"),
        (tiny_llama, LoraConfig(r=40, target_modules=["q_proj"], init_lora_weights="pissa"), "lower r"),
        (
            lambda: tiny_llama(tie_word_embeddings=True),
            LoraConfig(r=4, target_modules=["lm_head"], init_lora_weights="olora"),
            "tied weights",
        ),
    ],
)
def test_targets_an_init_cannot_split_are_refused_before_anything_changes(
    build: type[nn.Module], config: LoraConfig, message: str
) -> None:
    model = build()
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=message):
            get_peft_model(model, config)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
