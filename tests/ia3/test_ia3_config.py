"""IA3Config: which targets are feed-forward, the errors for bad combinations, the JSON format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

from peft_core import ConfigError, PeftModel, TargetNotFoundError, get_peft_model, inject_adapter_in_model
from peft_ia3 import IA3Config, IA3Layer


class Block(nn.Module):
    """Names that trip substring matching: ``fc`` and ``c_fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 4)
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.fc(torch.relu(self.c_fc(x))))


def _feedforward(model: nn.Module) -> dict[str, bool]:
    return {
        path: layer.is_feedforward["default"] for path, layer in model.named_modules() if isinstance(layer, IA3Layer)
    }


def test_feedforward_entries_match_whole_path_components() -> None:
    model = inject_adapter_in_model(
        IA3Config(target_modules=["c_fc", "fc", "proj"], feedforward_modules=["fc"]), Block()
    )
    assert _feedforward(model) == {"c_fc": False, "fc": True, "proj": False}  # "fc" never marks "c_fc"


def test_feedforward_as_a_regex_over_regex_targets() -> None:
    config = IA3Config(target_modules=r"(c_)?fc|proj", feedforward_modules=r".*fc")
    assert _feedforward(inject_adapter_in_model(config, Block())) == {"c_fc": True, "fc": True, "proj": False}


def test_feedforward_outside_the_targets_is_refused_in_the_config() -> None:
    with pytest.raises(ConfigError, match=r"feedforward_modules must be a subset of target_modules.*\['fc'\]"):
        IA3Config(target_modules=["proj"], feedforward_modules=["fc"])


def test_feedforward_outside_regex_targets_is_refused_at_injection() -> None:
    model = Block()
    with pytest.raises(ConfigError, match=r"subset of the targets.*\['fc'\]"):
        inject_adapter_in_model(IA3Config(target_modules=r"proj|c_fc", feedforward_modules=["fc"]), model)
    assert not any(isinstance(m, IA3Layer) for m in model.modules())  # nothing was changed


def test_feedforward_entries_that_match_nothing_name_the_closest_module() -> None:
    with pytest.raises(TargetNotFoundError, match=r"(?s)feedforward_modules.*'fcc' \(closest: fc"):
        inject_adapter_in_model(IA3Config(target_modules=r"fc|proj", feedforward_modules=["fcc"]), Block())


def test_fan_in_fan_out_without_a_conv1d_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="fan_in_fan_out=True, but no target"):
        inject_adapter_in_model(IA3Config(target_modules=["fc"], fan_in_fan_out=True), Block())


def test_feedforward_mode_is_per_adapter_on_one_layer() -> None:
    model = get_peft_model(Block(), IA3Config(target_modules=["fc"], feedforward_modules=["fc"]))
    model.add_adapter("out", IA3Config(target_modules=["fc"]))
    layer = model.base_model.model.fc
    assert layer.is_feedforward == {"default": True, "out": False}
    assert layer.ia3_l["default"].shape == (1, 8) and layer.ia3_l["out"].shape == (4, 1)


def test_json_round_trip_and_the_hugging_face_keys() -> None:
    config = IA3Config(target_modules={"fc", "proj"}, feedforward_modules={"fc"}, modules_to_save=["c_fc"])
    data = json.loads(json.dumps(config.to_json_dict()))
    assert IA3Config.from_json_dict(data) == config
    hf_keys = set(peft.IA3Config().to_dict()) - {"auto_mapping", "peft_version"}
    assert set(data) == hf_keys
    assert data["peft_type"] == "IA3" and data["target_modules"] == ["fc", "proj"]
    with_layers = IA3Config(target_modules=["fc"], layers_to_transform=[0]).to_json_dict()
    assert with_layers["layers_to_transform"] == [0]  # written when used


def test_hugging_face_peft_reads_the_saved_config_without_warnings(tmp_path: Path) -> None:
    model = get_peft_model(Block(), IA3Config(target_modules=["fc", "proj"], feedforward_modules=["fc"]))
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert isinstance(loaded, peft.IA3Config)
    assert loaded.feedforward_modules == {"fc"} and loaded.target_modules == {"fc", "proj"}
    assert PeftModel.from_pretrained(Block(), tmp_path).peft_config["default"].feedforward_modules == ["fc"]


def test_the_schema_documents_the_ia3_fields() -> None:
    properties = IA3Config.model_json_schema()["properties"]
    assert {"feedforward_modules", "fan_in_fan_out", "init_ia3_weights"} <= set(properties)
    assert "input" in properties["feedforward_modules"]["description"]
