"""AdaLoraConfig: the schedule's checks, the incumbent's JSON both ways, rank_pattern on a model."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

from peft_adalora import AdaLoraConfig, SVDLinear
from peft_core import ConfigError, TargetNotFoundError, get_peft_model
from peft_core.contract import adapter_layers
from support.models import ConvNet, tiny_gpt2, tiny_llama


def test_total_step_is_required_and_the_error_says_what_it_is() -> None:
    with pytest.raises(ConfigError, match=r"AdaLoraConfig\.total_step=None is invalid: .*give total_step > 0"):
        AdaLoraConfig(target_modules=["q_proj"])
    with pytest.raises(ConfigError, match=r"total_step=0 is invalid"):
        AdaLoraConfig(total_step=0)


def test_a_schedule_without_a_budget_phase_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"tinit=60, tfinal=40 and total_step=100 leave no budget phase"):
        AdaLoraConfig(total_step=100, tinit=60, tfinal=40)
    AdaLoraConfig(total_step=100, tinit=59, tfinal=40)  # one step of budget phase is enough


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("beta1", 1.0, "less than 1"),
        ("beta2", 0.0, "greater than 0"),
        ("deltaT", 0, "greater than or equal to 1"),
        ("init_r", 0, "greater than 0"),
        ("target_r", -1, "greater than or equal to 0"),
        ("orth_reg_weight", -0.1, "greater than or equal to 0"),
        ("tinit", -1, "greater than or equal to 0"),
    ],
)
def test_each_field_names_itself_the_value_and_what_is_allowed(field: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError, match=rf"AdaLoraConfig\.{field}={value!r} is invalid: .*{allowed}"):
        AdaLoraConfig(total_step=10, **{field: value})


def test_r_is_unused_as_in_the_incumbent() -> None:
    with pytest.warns(UserWarning, match="r=4 is not used by AdaLoRA"):
        AdaLoraConfig(total_step=10, r=4)


def test_the_incumbents_json_reads_here_and_ours_reads_there(tmp_path: Path) -> None:
    theirs = peft.AdaLoraConfig(
        init_r=10, target_r=4, tinit=5, tfinal=7, deltaT=2, beta1=0.8, beta2=0.9, orth_reg_weight=0.3,
        total_step=50, lora_alpha=24, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
        rank_pattern={"model.layers.0.self_attn.q_proj.lora_E": [True, False] * 5},
    )  # fmt: skip
    theirs.save_pretrained(str(tmp_path / "theirs"))
    data = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    ours = AdaLoraConfig.from_json_dict(data)
    assert isinstance(ours, AdaLoraConfig)
    mine = ours.to_json_dict()
    assert set(mine) == set(data) - {"peft_version", "auto_mapping"}
    assert {key: mine[key] for key in mine if key != "target_modules"} == {
        key: data[key] for key in mine if key != "target_modules"
    }
    assert sorted(mine["target_modules"]) == sorted(data["target_modules"])
    ours.save_pretrained(tmp_path / "ours")
    back = peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))
    assert isinstance(back, peft.AdaLoraConfig)
    assert (back.init_r, back.target_r, back.tinit, back.tfinal, back.deltaT, back.total_step) == (10, 4, 5, 7, 2, 50)
    assert back.rank_pattern == theirs.rank_pattern


@pytest.mark.parametrize(
    ("key", "value"),
    [("use_dora", True), ("alpha_pattern", {"q_proj": 4}), ("use_rslora", True), ("loftq_config", {"bits": 4})],
)
def test_lora_features_adalora_lacks_are_one_error_naming_the_key(key: str, value: object) -> None:
    data = AdaLoraConfig(total_step=10).to_json_dict() | {key: value}
    with pytest.raises(ConfigError, match=rf"{key}=.* asks for a feature this plugin does not support"):
        AdaLoraConfig.from_json_dict(data)


def _ranks(model: nn.Module) -> dict[str, int]:
    return {path: layer.r["default"] for path, layer in adapter_layers(model) if isinstance(layer, SVDLinear)}


def test_a_rank_pattern_builds_each_module_at_its_surviving_rank() -> None:
    pattern = {
        "transformer.h.0.attn.c_attn.lora_E": [True, False, True, False],
        "transformer.h.1.attn.c_attn.lora_E.default": [False] * 4,  # as the incumbent holds it before saving
    }
    config = AdaLoraConfig(init_r=4, total_step=10, target_modules=["c_attn"], rank_pattern=pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(tiny_gpt2(), config)
    assert _ranks(model.get_base_model()) == {"transformer.h.0.attn.c_attn": 2, "transformer.h.1.attn.c_attn": 0}
    stored = model.peft_config["default"]
    assert isinstance(stored, AdaLoraConfig)
    assert set(stored.rank_pattern or {}) == {
        "transformer.h.0.attn.c_attn.lora_E",
        "transformer.h.1.attn.c_attn.lora_E",
    }
    assert config.rank_pattern == pattern  # the user's object is not changed
    x = torch.randint(0, 64, (2, 8))
    model(input_ids=x)  # a rank-0 module runs (adds nothing)


def test_a_rank_pattern_that_does_not_fit_is_refused_before_the_model_changes() -> None:
    model = tiny_gpt2()
    before = copy.deepcopy(model.state_dict())
    wrong_length = {"transformer.h.0.attn.c_attn.lora_E": [True] * 3}
    with pytest.raises(ConfigError, match=r"has 3 entries, but init_r=4"):
        get_peft_model(
            model, AdaLoraConfig(init_r=4, total_step=9, target_modules=["c_attn"], rank_pattern=wrong_length)
        )
    unknown = {"transformer.h.0.mlp.c_fc.lora_E": [True] * 4}
    with pytest.raises(TargetNotFoundError, match="rank_pattern"):
        get_peft_model(model, AdaLoraConfig(init_r=4, total_step=9, target_modules=["c_attn"], rank_pattern=unknown))
    assert not _ranks(model) and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_default_targets_are_the_incumbents() -> None:
    base = tiny_llama()
    ours = get_peft_model(copy.deepcopy(base), AdaLoraConfig(total_step=10))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.AdaLoraConfig(total_step=10))
    their_paths = {
        n.removeprefix("base_model.model.").split(".lora_A")[0] for n, _ in theirs.named_parameters() if ".lora_A." in n
    }
    assert (
        set(_ranks(ours.get_base_model()))
        == their_paths
        == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    )


def test_a_convolution_target_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"cannot adapt 'conv2d' of type Conv2d"):
        get_peft_model(ConvNet(), AdaLoraConfig(total_step=10, target_modules=["conv2d"]))
