"""``lora_bias=True``: B's trained bias, in the incumbent's format and numbers both ways, merged into the
base bias, and refused clearly where it cannot work."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import peft
import pytest
import torch
from torch import Tensor, nn

from peft_core import ConfigError, MergeError, get_peft_model
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, disabled, loaded_by_the_other, outputs
from support.models import MLP, ConvNet, tiny_gpt2, tiny_llama, token_ids

MODELS: dict[str, tuple[Callable[[], nn.Module], list[str]]] = {
    "llama": (tiny_llama, ["q_proj", "v_proj", "down_proj"]),  # Linear
    "gpt2": (tiny_gpt2, ["c_attn", "c_fc"]),  # transformers Conv1D
    "convnet": (lambda: ConvNet().eval(), ["conv1d", "conv2d", "head"]),  # Conv1d/2d and Linear
}


def _inputs(model_name: str) -> Tensor:
    if model_name == "convnet":
        return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return token_ids(batch=2, length=8)


def _build(library: str, base: nn.Module, targets: list[str], init: bool = True) -> nn.Module:
    settings = {"r": 4, "lora_alpha": 8, "target_modules": targets, "lora_bias": True, "init_lora_weights": init}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "hf":
            return peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
        return get_peft_model(copy.deepcopy(base), LoraConfig(**settings))


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_same_seed_same_factors_and_biases_as_the_incumbent(model_name: str, init: bool) -> None:
    build, targets = MODELS[model_name]
    base = build()
    torch.manual_seed(1)
    theirs = _build("hf", base, targets, init)
    torch.manual_seed(1)
    ours = _build("ours", base, targets, init)
    expected = {k.replace(".default", ""): v for k, v in theirs.state_dict().items()}
    mine = {k.replace(".default", ""): v for k, v in ours.state_dict().items()}
    assert mine.keys() == expected.keys() and any(k.endswith("lora_B.bias") for k in mine)
    assert [k for k in expected if not torch.equal(mine[k], expected[k])] == []


@pytest.mark.parametrize("model_name", list(MODELS))
def test_adapters_load_both_ways_with_the_same_outputs(model_name: str, tmp_path: Path) -> None:
    build, targets = MODELS[model_name]
    base, x = build(), _inputs(model_name)
    for saver in ("hf", "ours"):
        trained = _build(saver, base, targets).eval()
        add_noise(trained)
        trained.save_pretrained(tmp_path / saver)
        loaded = loaded_by_the_other(saver, base, tmp_path / saver)
        expected = outputs(trained, x)
        assert not torch.allclose(expected, outputs(base, x), atol=1e-3), "a void test"
        torch.testing.assert_close(outputs(loaded, x), expected, atol=ATOL, rtol=0)
        with disabled(loaded), disabled(trained):
            torch.testing.assert_close(outputs(loaded, x), outputs(trained, x), atol=ATOL, rtol=0)


def test_merging_moves_the_bias_into_the_base_bias_and_back_exactly() -> None:
    base = tiny_llama()
    model = _build("ours", base, ["q_proj", "down_proj"]).eval()
    add_noise(model)
    x = token_ids(batch=2, length=8)
    expected = outputs(model, x)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    q_proj.base_layer.bias = nn.Parameter(torch.zeros(q_proj.base_layer.out_features))  # llama has none
    before = {k: v.clone() for k, v in q_proj.base_layer.state_dict().items()}
    with pytest.raises(MergeError, match="no bias to merge it into"):
        model.merge_adapter()  # down_proj has no bias
    assert all(torch.equal(v, before[k]) for k, v in q_proj.base_layer.state_dict().items())  # all or nothing
    merged_only_q = _build("ours", base, ["q_proj"]).eval()
    add_noise(merged_only_q)
    layer = merged_only_q.base_model.model.model.layers[0].self_attn.q_proj
    for module in merged_only_q.modules():
        if hasattr(module, "lora_B") and getattr(module.base_layer, "bias", "x") is None:
            module.base_layer.bias = nn.Parameter(torch.zeros(module.base_layer.out_features))
    expected = outputs(merged_only_q, x)
    original_bias = layer.base_layer.bias.detach().clone()
    merged_only_q.merge_adapter()
    torch.testing.assert_close(outputs(merged_only_q, x), expected, atol=1e-5, rtol=0)
    scale = layer.scaling["default"]
    torch.testing.assert_close(layer.base_layer.bias, original_bias + scale * layer.lora_B["default"].bias)
    merged_only_q.unmerge_adapter()
    assert torch.equal(layer.base_layer.bias, original_bias)


def test_refusals_name_the_field_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="lora_bias=True needs init_lora_weights True or False"):
        LoraConfig(target_modules=["lin0"], lora_bias=True, init_lora_weights="pissa")
    with pytest.raises(ConfigError, match="cannot be combined with use_dora"):
        LoraConfig(target_modules=["lin0"], lora_bias=True, use_dora=True)
    model = MLP()
    with pytest.raises(ConfigError, match="not supported on Embedding layers such as 'emb'"):
        get_peft_model(model, LoraConfig(target_modules=["emb", "lin0"], lora_bias=True))
    assert not any(hasattr(m, "lora_A") for m in model.modules())  # refused before anything changed
    plain_first = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"]))
    with pytest.raises(ConfigError, match="same variant flags"):
        plain_first.add_adapter("biased", LoraConfig(target_modules=["lin0"], lora_bias=True))
    biased_first = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"], lora_bias=True))
    biased_first.add_adapter("plain", LoraConfig(target_modules=["lin0"]))  # a biased layer holds plain ones too
    assert biased_first.base_model.model.lin0.lora_B["plain"].bias is None
