"""LoHa, LoKr and OFT configs: the same keys, defaults and values as Hugging Face PEFT's, both ways."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import peft
import pytest
from peft.utils import constants

from peft_core import ConfigError, PeftConfig, get_peft_model
from peft_core.io.checkpoint import config_from_dict
from peft_loha import LoHaConfig, LoHaTuner
from peft_lokr import LoKrConfig, LoKrTuner
from peft_oft import OFTConfig, OFTTuner
from support.hf_peft import hf_model
from support.models import tiny_llama

METADATA = {"peft_version", "auto_mapping"}

#: Every field set away from its default, by method (Hugging Face PEFT field names).
ALL_SET: dict[str, dict[str, Any]] = {
    "LOHA": {
        "r": 6,
        "alpha": 3,
        "rank_dropout": 0.1,
        "module_dropout": 0.2,
        "use_effective_conv2d": True,
        "init_weights": False,
        "rank_pattern": {"v_proj": 2},
        "alpha_pattern": {"q_proj": 5},
    },
    "LOKR": {
        "r": 6,
        "alpha": 3,
        "rank_dropout": 0.1,
        "module_dropout": 0.2,
        "use_effective_conv2d": True,
        "decompose_both": True,
        "decompose_factor": 4,
        "rank_dropout_scale": True,
        "init_weights": "lycoris",
        "rank_pattern": {"v_proj": 2},
        "alpha_pattern": {"q_proj": 5},
    },
    "OFT": {
        "r": 4,
        "oft_block_size": 0,
        "module_dropout": 0.1,
        "bias": "oft_only",
        "init_weights": False,
        "coft": True,
        "eps": 1e-3,
        "block_share": True,
        "use_cayley_neumann": False,
        "num_cayley_neumann_terms": 7,
    },
}
CLASSES: dict[str, tuple[type[PeftConfig], type[peft.PeftConfig]]] = {
    "LOHA": (LoHaConfig, peft.LoHaConfig),
    "LOKR": (LoKrConfig, peft.LoKrConfig),
    "OFT": (OFTConfig, peft.OFTConfig),
}
COMMON = {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0], "layers_pattern": "layers"}


def _theirs_json(config: peft.PeftConfig) -> dict[str, Any]:
    data = {k: v for k, v in config.to_dict().items() if k not in METADATA}
    data["peft_type"] = str(data["peft_type"].value if hasattr(data["peft_type"], "value") else data["peft_type"])
    if isinstance(data.get("target_modules"), set | list):  # a set there: any order
        data["target_modules"] = sorted(data["target_modules"])
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("peft_type", sorted(CLASSES))
def test_defaults_and_keys_are_hugging_face_peft_s(peft_type: str) -> None:
    ours, theirs = CLASSES[peft_type]
    assert ours().to_json_dict() == _theirs_json(theirs())


@pytest.mark.parametrize("peft_type", sorted(CLASSES))
def test_every_field_set_writes_what_hugging_face_peft_writes(peft_type: str) -> None:
    ours, theirs = CLASSES[peft_type]
    options = ALL_SET[peft_type] | COMMON
    written = ours(**options).to_json_dict()
    assert written == _theirs_json(theirs(**options))
    assert config_from_dict(written) == ours(**options)


@pytest.mark.parametrize("peft_type", sorted(CLASSES))
def test_an_adapter_config_saved_by_hugging_face_peft_reads_back(peft_type: str, tmp_path: Path) -> None:
    ours, theirs = CLASSES[peft_type]
    options = ALL_SET[peft_type] | {"target_modules": ["q_proj", "v_proj"]}
    if peft_type == "LOKR":
        options["decompose_factor"] = -1
    hf_model(tiny_llama(), theirs(**options)).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = config_from_dict(data)
    unknown = [str(w.message) for w in caught if "unknown config keys" in str(w.message)]
    assert not unknown, unknown  # every key Hugging Face PEFT writes is known
    assert isinstance(config, ours)
    read, expected = (
        c.model_dump(exclude={"base_model_name_or_path", "inference_mode"}) for c in (config, ours(**options))
    )
    # Hugging Face PEFT keeps target_modules as a set: the saved list's order varies by process.
    read["target_modules"], expected["target_modules"] = (
        sorted(read["target_modules"]),
        sorted(expected["target_modules"]),
    )
    assert read == expected


@pytest.mark.parametrize(
    ("tuner", "table"),
    [
        (LoHaTuner, constants.TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING),
        (LoKrTuner, constants.TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING),
        (OFTTuner, constants.TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING),
    ],
)
def test_default_target_modules_are_hugging_face_peft_s_table(tuner: Any, table: dict[str, list[str]]) -> None:
    assert dict(tuner.default_target_modules) == {k: list(v) for k, v in table.items()}
    model = get_peft_model(tiny_llama(), tuner.config_class())  # llama: q_proj, v_proj from the table
    assert sorted(model.peft_config["default"].target_modules) == sorted(table["llama"])  # type: ignore[arg-type]


def test_oft_needs_exactly_one_of_r_and_block_size() -> None:
    with pytest.raises(ConfigError, match=r"r \(4\) and oft_block_size \(8\)"):
        OFTConfig(r=4, oft_block_size=8)
    with pytest.raises(ConfigError, match="exactly one"):
        OFTConfig(r=0, oft_block_size=0)


@pytest.mark.parametrize(
    ("config_class", "field", "value"),
    [(LoHaConfig, "rank_dropout", 1.0), (LoKrConfig, "r", 0), (LoKrConfig, "init_weights", "gaussian")],
)
def test_a_bad_value_names_the_field(config_class: type[PeftConfig], field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{config_class.__name__}.{field}={value!r} is invalid"):
        config_class(**{field: value})
