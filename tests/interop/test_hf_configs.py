"""adapter_config.json written by Hugging Face PEFT, this version, older ones and newer ones.

Unknown keys switched off load with one warning listing them; a key that asks for a
feature we lack is one clear error naming it, and the model is left as it was.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path
from typing import Any

import peft
import pytest
import torch

from peft_core import AdapterLoadError, PeftModel
from peft_core.io.checkpoint import config_from_dict
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.environments import ON_DORA, python_in, site_without
from support.hf_peft import ATOL, base_model, hf_model, inputs_for, outputs


def _hf_adapter(directory: Path, config: peft.PeftConfig, model: str = "llama") -> dict[str, Any]:
    """Save a real Hugging Face PEFT adapter; return its adapter_config.json."""
    hf_model(base_model(model), config).save_pretrained(directory)
    data: dict[str, Any] = json.loads((directory / "adapter_config.json").read_text())
    return data


def _rewrite_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_every_lora_field_written_by_hf_reads_back(tmp_path: Path) -> None:
    data = _hf_adapter(
        tmp_path,
        peft.LoraConfig(
            r=6,
            lora_alpha=12,
            lora_dropout=0.1,
            target_modules=["q_proj", "v_proj"],
            exclude_modules=["layers.1.self_attn.v_proj"],
            bias="lora_only",
            use_rslora=True,
            rank_pattern={"v_proj": 2},
            alpha_pattern={"q_proj": 3},
            modules_to_save=["lm_head"],
            layers_to_transform=[0, 1],
            layers_pattern="layers",
            task_type="CAUSAL_LM",
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this version's keys are all known: no warning
        config = config_from_dict(data)
    assert isinstance(config, LoraConfig)
    assert config.model_dump() | {"target_modules": sorted(config.target_modules or [])} == {
        "peft_type": "LORA",
        "use_dora": False,
        "target_modules": ["q_proj", "v_proj"],
        "exclude_modules": ["layers.1.self_attn.v_proj"],
        "modules_to_save": ["lm_head"],
        "layers_to_transform": [0, 1],
        "layers_pattern": "layers",
        "inference_mode": True,
        "base_model_name_or_path": data["base_model_name_or_path"],
        "revision": None,
        "task_type": "CAUSAL_LM",
        "r": 6,
        "lora_alpha": 12,
        "lora_dropout": 0.1,
        "bias": "lora_only",
        "fan_in_fan_out": False,
        "use_rslora": True,
        "init_lora_weights": True,
        "lora_bias": False,
        "target_parameters": None,
        "trainable_token_indices": None,
        "ensure_weight_tying": False,
        "rank_pattern": {"v_proj": 2},
        "alpha_pattern": {"q_proj": 3},
    }


def test_every_ia3_field_written_by_hf_reads_back(tmp_path: Path) -> None:
    data = _hf_adapter(
        tmp_path,
        peft.IA3Config(
            target_modules=["c_attn", "mlp.c_proj"],
            feedforward_modules=["mlp.c_proj"],
            modules_to_save=["lm_head"],
            init_ia3_weights=False,
        ),
        model="gpt2",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = config_from_dict(data)
    assert isinstance(config, IA3Config)
    assert sorted(config.target_modules or []) == ["c_attn", "mlp.c_proj"]
    assert (config.feedforward_modules, config.fan_in_fan_out, config.init_ia3_weights) == (["mlp.c_proj"], True, False)
    assert config.modules_to_save == ["lm_head"]


def test_we_write_lora_configs_hf_reads_without_warnings(tmp_path: Path) -> None:
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], use_rslora=True, rank_pattern={"q_proj": 2})
    (tmp_path / "adapter_config.json").write_text(json.dumps(config.to_json_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theirs = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert isinstance(theirs, peft.LoraConfig)
    assert (theirs.r, theirs.lora_alpha, theirs.use_rslora, theirs.rank_pattern) == (4, 16, True, {"q_proj": 2})


# Configs as older Hugging Face PEFT versions wrote them (keys of that time, features off).
OLD_CONFIGS = {
    "peft-0.2": {
        "base_model_name_or_path": "gpt2",
        "bias": "none",
        "enable_lora": None,
        "fan_in_fan_out": True,
        "inference_mode": True,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "merge_weights": False,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": 4,
        "target_modules": ["c_attn"],
        "task_type": "CAUSAL_LM",
    },
    "peft-0.7": {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "gpt2",
        "bias": "none",
        "fan_in_fan_out": True,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": 4,
        "rank_pattern": {},
        "revision": None,
        "target_modules": ["c_attn"],
        "task_type": "CAUSAL_LM",
        "use_rslora": False,
    },
    "peft-0.13": {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "gpt2",
        "bias": "none",
        "fan_in_fan_out": True,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": 4,
        "rank_pattern": {},
        "revision": None,
        "runtime_config": {"ephemeral_gpu_offload": False},
        "target_modules": ["c_attn"],
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    },
    "peft-0.4-ia3": {
        "base_model_name_or_path": "gpt2",
        "fan_in_fan_out": True,
        "feedforward_modules": ["mlp.c_proj"],
        "inference_mode": True,
        "init_ia3_weights": True,
        "modules_to_save": None,
        "peft_type": "IA3",
        "revision": None,
        "target_modules": ["c_attn", "mlp.c_proj"],
        "task_type": "CAUSAL_LM",
    },
}
UNKNOWN_IN_OLD = {"peft-0.2": ["enable_lora", "merge_weights"], "peft-0.7": [], "peft-0.13": [], "peft-0.4-ia3": []}


@pytest.mark.parametrize("version", OLD_CONFIGS)
def test_configs_of_older_versions_load_and_run(version: str, tmp_path: Path) -> None:
    """The old config beside this version's weights: same outputs as Hugging Face PEFT."""
    old = OLD_CONFIGS[version]
    if old["peft_type"] == "IA3":
        config: peft.PeftConfig = peft.IA3Config(
            target_modules=old["target_modules"], feedforward_modules=old["feedforward_modules"], init_ia3_weights=False
        )
    else:
        config = peft.LoraConfig(
            target_modules=old["target_modules"], r=old["r"], lora_alpha=old["lora_alpha"], init_lora_weights=False
        )
    theirs = hf_model(base_model("gpt2"), config)
    theirs.save_pretrained(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps(old))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = PeftModel.from_pretrained(base_model("gpt2"), tmp_path)
    ours_warnings = [str(w.message) for w in caught if "unknown config keys" in str(w.message)]
    if UNKNOWN_IN_OLD[version]:
        assert len(ours_warnings) == 1 and str(UNKNOWN_IN_OLD[version]) in ours_warnings[0]
    else:
        assert ours_warnings == []
    x = inputs_for("gpt2")
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)


def test_keys_of_a_newer_version_switched_off_load_with_one_warning(tmp_path: Path) -> None:
    _hf_adapter(tmp_path, peft.LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    _rewrite_config(tmp_path, peft_version="9.0.0", zeta_config=None, use_zeta=False, zeta_layers=[])
    with pytest.warns(
        UserWarning, match=r"unknown config keys.*\['use_zeta', 'zeta_config', 'zeta_layers'\]"
    ) as record:
        model = PeftModel.from_pretrained(base_model("llama"), tmp_path)
    assert len([w for w in record if "unknown config keys" in str(w.message)]) == 1
    assert model.peft_config["default"].target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("loftq_config", {"loftq_bits": 4, "loftq_iter": 1}),
        ("use_qalora", True),
        ("layer_replication", [[0, 2], [1, 2]]),
        ("megatron_config", {"tensor_model_parallel_size": 2}),
        ("eva_config", {"rho": 2.0}),
        ("init_lora_weights", "corda"),
        ("init_lora_weights", "lora_ga"),
        ("quantization_config", {"load_in_4bit": True}),  # unknown to us, with a value
    ],
)
def test_a_feature_we_lack_is_one_clear_error_and_changes_nothing(key: str, value: Any, tmp_path: Path) -> None:
    _hf_adapter(tmp_path, peft.LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    _rewrite_config(tmp_path, **{key: value})
    base = base_model("llama")
    before = copy.deepcopy(base)
    with pytest.raises(AdapterLoadError, match=key):
        PeftModel.from_pretrained(base, tmp_path)
    x = inputs_for("llama")
    assert [type(m) for m in base.modules()] == [type(m) for m in before.modules()]
    assert torch.equal(outputs(base, x), outputs(before, x))


def test_without_peft_dora_a_real_hf_dora_adapter_is_one_error_naming_it(tmp_path: Path) -> None:
    _hf_adapter(tmp_path, peft.LoraConfig(target_modules=["q_proj"], use_dora=True))
    site = site_without(tmp_path / "site", ON_DORA)
    load = (
        "import peft_core\n"
        "from support.models import tiny_llama\n"
        "base = tiny_llama()\n"
        "try:\n"
        f"    peft_core.PeftModel.from_pretrained(base, {str(tmp_path)!r})\n"
        "except peft_core.PeftError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print('wrapped:', sorted({type(m).__module__.split('.')[0] for m in base.modules()}))\n"
    )
    result = python_in(site, ["-c", load], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    error, wrapped = result.stdout.splitlines()
    assert re.fullmatch(r"AdapterLoadError .*use_dora=True.*peft-dora plugin.*pip install peft-dora", error), error
    assert wrapped == "wrapped: ['torch', 'transformers']"  # the model was not changed


def test_settings_of_features_that_are_off_load_with_any_value(tmp_path: Path) -> None:
    _hf_adapter(tmp_path, peft.LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    _rewrite_config(tmp_path, megatron_core="my.megatron", qalora_group_size=64, runtime_config={"x": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PeftModel.from_pretrained(base_model("llama"), tmp_path)


def test_modules_to_save_the_model_lacks_are_dropped_with_a_warning(tmp_path: Path) -> None:
    _hf_adapter(tmp_path, peft.LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    _rewrite_config(tmp_path, modules_to_save=["lm_head", "value_head"])
    with pytest.warns(UserWarning, match=r"modules_to_save entries \['value_head'\] match no module"):
        model = PeftModel.from_pretrained(base_model("llama"), tmp_path)
    assert model.peft_config["default"].modules_to_save == ["lm_head"]
