"""PeftConfig and LoraConfig: validation, JSON in the Hugging Face format, schema."""

from __future__ import annotations

import json

import pytest

from peft_core import ConfigError, PeftConfig
from peft_core.contract import TargetedConfig
from peft_ia3 import IA3Config
from peft_lora import LoraConfig


def test_json_round_trip_keeps_every_field() -> None:
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["q", "v"],
        modules_to_save=["head"],
        rank_pattern={"q": 2},
        alpha_pattern={"v": 3.5},
        bias="lora_only",
        use_rslora=True,
        layers_to_transform=[0, 1],
        layers_pattern="layers",
    )
    data = json.loads(json.dumps(config.to_json_dict()))
    assert LoraConfig.from_json_dict(data) == config
    assert list(data) == sorted(data)  # written with sorted keys, as Hugging Face PEFT does


def test_json_carries_unsupported_features_switched_off() -> None:
    data = LoraConfig(target_modules=["q"]).to_json_dict()
    assert data["peft_type"] == "LORA"
    assert data["use_dora"] is False and data["loftq_config"] == {} and data["megatron_core"] == "megatron.core"


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"r": 0}, "r", "greater than 0"),
        ({"lora_dropout": 1.0}, "lora_dropout", "less than 1"),
        ({"lora_dropout": -0.1}, "lora_dropout", "greater than or equal to 0"),
        ({"bias": "some"}, "bias", "'none', 'all' or 'lora_only'"),
        ({"init_lora_weights": "eva"}, "init_lora_weights", "pissa_niter_[n]"),
        ({"rank_pattern": {"q": 0}}, "rank_pattern", "ranks must be > 0"),
        ({"lora_alpah": 8}, "lora_alpah", "got unknown arguments ['lora_alpah']; its fields are"),
        ({"layers_to_transform": [-1]}, "layers_to_transform", ">= 0"),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_values(kwargs: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        LoraConfig(target_modules=["q"], **kwargs)
    assert field in str(info.value)
    assert hint in str(info.value)


def test_assignment_is_validated() -> None:
    config = LoraConfig(target_modules=["q"])
    with pytest.raises(ValueError, match="greater than 0"):
        config.r = -1
    assert config.r == 8


def test_layer_selection_rules() -> None:
    with pytest.raises(ConfigError, match="layers_to_transform is not"):
        LoraConfig(target_modules=["q"], layers_pattern="layers")
    with pytest.raises(ConfigError, match="regex target_modules"):
        LoraConfig(target_modules=r".*\.q", layers_to_transform=[0])


def test_sets_become_sorted_lists() -> None:
    assert LoraConfig(target_modules={"v", "q"}).target_modules == ["q", "v"]


def test_hugging_face_keys_for_missing_features_load_when_off() -> None:
    data = LoraConfig(target_modules=["q"]).to_json_dict() | {"peft_version": "0.21.2", "auto_mapping": None}
    assert LoraConfig.from_json_dict(data).target_modules == ["q"]


def test_a_feature_we_lack_is_a_clear_error() -> None:
    data = LoraConfig(target_modules=["q"]).to_json_dict() | {"use_qalora": True}
    with pytest.raises(ConfigError, match="use_qalora=True asks for a feature"):
        LoraConfig.from_json_dict(data)


def test_unknown_keys_switched_off_warn_once_and_load() -> None:
    data = LoraConfig(target_modules=["q"]).to_json_dict() | {"new_thing": None, "other_new": False}
    with pytest.warns(UserWarning, match=r"\['new_thing', 'other_new'\]") as record:
        config = LoraConfig.from_json_dict(data)
    assert len(record) == 1
    assert config.target_modules == ["q"]


def test_unknown_key_with_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown key 'new_thing'"):
        LoraConfig.from_json_dict({"peft_type": "LORA", "new_thing": 3})


@pytest.mark.parametrize("config_class", [TargetedConfig, LoraConfig, IA3Config])
def test_json_schema_for_every_config(config_class: type[PeftConfig]) -> None:
    schema = config_class.model_json_schema()
    assert "target_modules" in schema["properties"]
    assert "peft_type" in schema["properties"]


def test_the_shared_fields_carry_no_module_targeting() -> None:
    # Methods without module targets (prompt learning) inherit PeftConfig: their JSON has no such keys.
    assert not {"target_modules", "modules_to_save", "layers_to_transform"} & set(PeftConfig.model_fields)


def test_lora_scaling() -> None:
    assert LoraConfig(r=4, lora_alpha=8).scaling() == 2.0
    assert LoraConfig(r=4, lora_alpha=8, use_rslora=True).scaling() == 4.0


def test_ia3_feedforward_must_be_a_subset_of_targets() -> None:
    with pytest.raises(ConfigError, match=r"subset of target_modules; not targets: \['fc2'\]"):
        IA3Config(target_modules=["fc1"], feedforward_modules=["fc2"])
