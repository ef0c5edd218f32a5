"""``target_parameters``: LoRA on bare parameters (MoE expert weights) in the incumbent's format, stream
and numbers, both ways; merging exact; what it cannot do refused clearly."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

from peft_core import ConfigError, PeftError, TargetNotFoundError, get_peft_model
from peft_core import get_peft_model_state_dict as our_state_dict
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, disabled, loaded_by_the_other, outputs
from support.models import tiny_llama, tiny_mixtral, token_ids

EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


class Transposed(nn.Module):
    """Experts stored (E, in, out), flagged ``is_transposed`` as some MoE implementations do, plus a 2-D one."""

    is_transposed = True

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Parameter(torch.randn(3, 8, 10) * 0.2)
        self.mix = nn.Parameter(torch.randn(8, 8) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (3, tokens, 8)
        return torch.bmm(x @ self.mix.T, self.up)


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.experts = Transposed()
        self.head = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.experts(x))


def _both(base: nn.Module, settings: dict[str, object], seed: int = 1) -> tuple[nn.Module, nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))  # type: ignore[arg-type]
        theirs_next = torch.rand(3)
        torch.manual_seed(seed)
        ours = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))  # type: ignore[arg-type]
        assert torch.equal(torch.rand(3), theirs_next), "the random stream continues elsewhere"
    return ours, theirs


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_same_seed_same_factors_keys_and_outputs_as_the_incumbent(init: bool | str) -> None:
    base = tiny_mixtral()
    settings = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "target_parameters": EXPERTS}
    ours, theirs = _both(base, settings | {"init_lora_weights": init})
    mine, expected = our_state_dict(ours), peft.get_peft_model_state_dict(theirs)
    assert mine.keys() == expected.keys()
    assert "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight" in mine  # the nesting's names
    assert [k for k in expected if not torch.equal(mine[k], expected[k])] == []
    x = token_ids(batch=2, length=8)
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)


def test_adapters_load_both_ways_and_merge_exactly(tmp_path: Path) -> None:
    base = tiny_mixtral()
    x = token_ids(batch=2, length=8)
    settings = {"r": 2, "lora_alpha": 4, "target_modules": [], "target_parameters": EXPERTS}
    for saver in ("hf", "ours"):
        ours, theirs = _both(base, settings)
        trained = theirs if saver == "hf" else ours
        add_noise(trained)
        trained.save_pretrained(tmp_path / saver)
        loaded = loaded_by_the_other(saver, base, tmp_path / saver)
        expected = outputs(trained, x)
        assert not torch.allclose(expected, outputs(base, x), atol=1e-3), "a void test"
        torch.testing.assert_close(outputs(loaded, x), expected, atol=ATOL, rtol=0)
        with disabled(loaded):
            torch.testing.assert_close(outputs(loaded, x), outputs(base, x), atol=ATOL, rtol=0)
    ours.merge_adapter()
    torch.testing.assert_close(outputs(ours, x), outputs(trained, x), atol=1e-5, rtol=0)
    ours.unmerge_adapter()
    for (name, param), original in zip(ours.get_base_model().named_parameters(), base.parameters(), strict=False):
        if "experts.base_layer" in name:
            assert torch.equal(param, original.to(param.dtype)) or param.shape != original.shape, name


def test_transposed_experts_and_two_dimensional_parameters_match_the_incumbent() -> None:
    base = Wrapper()
    settings = {
        "r": 2,
        "target_modules": [],
        "target_parameters": ["experts.up", "experts.mix"],
        "init_lora_weights": False,
    }
    ours, theirs = _both(base, settings)
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0)
        assert not torch.allclose(ours(x), base(x), atol=1e-3)
    merged = ours.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), theirs(x), atol=1e-5, rtol=0)


def test_training_updates_only_the_factors() -> None:
    model = get_peft_model(tiny_mixtral(), LoraConfig(r=2, target_modules=[], target_parameters=EXPERTS))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    x = token_ids(batch=2, length=8)
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_refusals_name_the_field_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"target_parameters cannot be combined with lora_dropout=0.1"):
        LoraConfig(target_parameters=EXPERTS, lora_dropout=0.1)
    with pytest.raises(ConfigError, match=r"init_lora_weights='pissa'"):
        LoraConfig(target_parameters=EXPERTS, init_lora_weights="pissa")
    model = tiny_mixtral()
    with pytest.raises(
        TargetNotFoundError, match=r"target_parameters: 1 entry matched no(.|\n)*'mlp.experts.gate_proj'"
    ):
        get_peft_model(model, LoraConfig(target_modules=[], target_parameters=["mlp.experts.gate_proj"]))
    with pytest.raises(ConfigError, match="selected by target_modules and owns target_parameters"):
        get_peft_model(model, LoraConfig(target_modules=["experts"], target_parameters=EXPERTS))
    assert not any("lora_" in n for n, _ in model.named_parameters())  # refused before anything changed
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=[], target_parameters=EXPERTS))
    with pytest.raises(PeftError, match="per_row"):
        peft_model(input_ids=token_ids(batch=2), adapter_names=["default", "__base__"])
    with pytest.raises(ConfigError, match="must target the same parameters"):
        peft_model.add_adapter("other", LoraConfig(r=2, target_modules=[], target_parameters=EXPERTS[:1]))
    assert list(peft_model.peft_config) == ["default"]


def test_no_target_modules_and_no_defaults_is_fine_with_target_parameters() -> None:
    model = get_peft_model(Wrapper(), LoraConfig(target_parameters=["experts.up"]))  # target_modules=None
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "base_model.model.experts.lora_A.default.up.weight",
        "base_model.model.experts.lora_B.default.up.weight",
    ]
    with pytest.raises(ConfigError, match="target_modules is not set"):
        get_peft_model(Wrapper(), LoraConfig())
    llama = get_peft_model(tiny_llama(), LoraConfig(target_parameters=["mlp.down_proj.weight"]))
    assert llama.peft_config["default"].target_modules == ["q_proj", "v_proj"]  # defaults still apply, as there
