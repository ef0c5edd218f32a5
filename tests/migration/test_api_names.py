"""The names and arguments Hugging Face PEFT's users call every day, each checked against the incumbent."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

import peft_core
from peft_core import (
    ConfigError,
    PeftConfig,
    PeftModel,
    TaskType,
    UnknownFieldError,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
)
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.models import MLP, tiny_bert, tiny_gpt2, tiny_llama, token_ids

IDS = token_ids()


# --- 3. default target_modules, as the incumbent picks them ---


@pytest.mark.parametrize(
    ("build", "config", "theirs"),
    [
        (tiny_llama, LoraConfig(), peft.LoraConfig()),
        (tiny_gpt2, LoraConfig(), peft.LoraConfig()),
        (tiny_bert, LoraConfig(task_type="SEQ_CLS"), peft.LoraConfig(task_type="SEQ_CLS")),
        (tiny_llama, IA3Config(), peft.IA3Config()),
    ],
    ids=["llama-lora", "gpt2-lora", "bert-lora", "llama-ia3"],
)
def test_without_target_modules_the_architectures_defaults_are_used(
    build: type[nn.Module], config: PeftConfig, theirs: object
) -> None:
    ours = get_peft_model(build(), config)
    incumbent = peft.get_peft_model(build(), theirs)  # type: ignore[arg-type]
    assert sorted(ours.targeted_module_names) == sorted(incumbent.targeted_module_names)
    ours_config, their_config = ours.peft_config["default"], incumbent.peft_config["default"]
    assert set(ours_config.target_modules) == set(their_config.target_modules)  # type: ignore[attr-defined]
    assert config.target_modules is None  # type: ignore[attr-defined]  # the user's config stays as it was


def test_an_architecture_without_defaults_gets_one_error_listing_the_way_out() -> None:
    with pytest.raises(ConfigError, match="has no default targets for model_type None.*'all-linear'"):
        get_peft_model(MLP(), LoraConfig())


# --- 4. names and arguments ---


def test_peft_config_from_pretrained_dispatches_to_the_installed_plugins_class(tmp_path: Path) -> None:
    get_peft_model(MLP(), LoraConfig(r=4, target_modules=["lin0"], task_type=TaskType.CAUSAL_LM)).save_pretrained(
        tmp_path
    )
    config = PeftConfig.from_pretrained(tmp_path)
    assert type(config) is LoraConfig and config.r == 4 and config.task_type == "CAUSAL_LM"
    assert LoraConfig.from_pretrained(tmp_path) == config
    theirs = peft.LoraConfig.from_pretrained(str(tmp_path)).to_dict()
    shared = set(theirs) & set(config.to_dict()) - {"target_modules"}  # the incumbent holds a set there
    assert {k: config.to_dict()[k] for k in shared} == {k: theirs[k] for k in shared}
    assert set(theirs) - set(config.to_dict()) <= {"peft_version", "auto_mapping"}
    config.save_pretrained(tmp_path / "again")
    assert PeftConfig.from_pretrained(tmp_path / "again") == config
    assert config.model_copy(update={"r": 2}).r == 2 and config.r == 4  # instead of dataclasses.replace


def test_from_pretrained_load_adapter_and_friends_take_the_incumbents_arguments(tmp_path: Path) -> None:
    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    model.add_adapter(
        "second", LoraConfig(target_modules=["lin1"]), low_cpu_mem_usage=False, autocast_adapter_dtype=True
    )
    model.save_pretrained(tmp_path)
    config = LoraConfig.from_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(MLP(), tmp_path, config=config, low_cpu_mem_usage=True, torch_device="cpu")
    report = loaded.load_adapter(tmp_path / "second", "second", torch_device="cpu")
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert loaded.base_model.peft_config is loaded.peft_config and loaded.base_model.model is loaded.get_base_model()
    loaded.base_model.set_adapter("second")
    assert loaded.active_adapters == ["second"] == loaded.base_model.active_adapters
    assert loaded.active_peft_config is loaded.peft_config["second"]
    assert peft_core.load_peft_weights(tmp_path).keys() == get_peft_model_state_dict(model).keys()


def test_inject_adapter_in_model_takes_a_state_dict_and_leaves_a_misfit_out(tmp_path: Path) -> None:
    source = inject_adapter_in_model(LoraConfig(target_modules=["lin0"], init_lora_weights=False), MLP())
    state = get_peft_model_state_dict(source)
    assert all(not key.startswith("base_model.") for key in state)  # keys relative to the plain module
    target = inject_adapter_in_model(LoraConfig(target_modules=["lin0"]), MLP(), state_dict=state)
    assert all(torch.equal(get_peft_model_state_dict(target)[k], v) for k, v in state.items())
    fresh = MLP()
    with pytest.raises(peft_core.AdapterLoadError):
        inject_adapter_in_model(LoraConfig(target_modules=["lin1"]), fresh, state_dict=state)
    assert "peft_config" not in fresh.__dict__ and not any(
        isinstance(m, peft_core.contract.AdapterLayer) for m in fresh.modules()
    )


def test_status_names_and_base_model_state_dict_match_the_incumbent() -> None:
    config = dict(target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    ours = get_peft_model(tiny_llama(), LoraConfig(**config))
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**config))
    assert ours.targeted_module_names == theirs.targeted_module_names
    assert ours.modules_to_save == theirs.modules_to_save == {"lm_head"}
    mine, incumbent = ours.get_model_status(), theirs.get_model_status()
    for field in ("peft_types", "trainable_params", "total_params", "num_adapter_layers", "enabled"):
        assert getattr(mine, field) == getattr(incumbent, field), field
    for field in ("active_adapters", "merged_adapters", "available_adapters", "requires_grad"):
        assert getattr(mine, field) == getattr(incumbent, field), field
    assert [(s.name, s.active_adapters) for s in ours.get_layer_status() if s.name.endswith("proj")] == [
        (s.name, s.active_adapters) for s in theirs.get_layer_status() if s.name.endswith("proj")
    ]
    base = peft_core.get_base_model_state_dict(ours)
    assert base.keys() == tiny_llama().state_dict().keys()
    assert base.keys() == peft.get_base_model_state_dict(theirs).keys()


def test_prepare_for_hotswap_takes_the_incumbents_arguments() -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"]))
    peft_core.prepare_model_for_compiled_hotswap(model, target_rank=8, check_compiled="error")
    assert model.get_base_model().lin0.lora_A["default"].weight.shape[0] == 8
    with pytest.raises(peft_core.PeftError, match="call it before torch.compile"):
        peft_core.prepare_for_hotswap(torch.compile(model), target_rank=8)


# --- 5. a method that is not installed ---


@pytest.fixture
def without_loha(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "loha,peft-loha")
    peft_core.registry.reset()
    yield
    monkeypatch.delenv("PEFT_CORE_DISABLE_PLUGINS")
    peft_core.registry.reset()


@pytest.mark.usefixtures("without_loha")
def test_a_method_that_is_not_installed_names_its_distribution(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="LoHaConfig comes with the peft-loha plugin, which is not installed"):
        from peft_core import LoHaConfig  # noqa: F401
    peft.get_peft_model(MLP(), peft.LoHaConfig(target_modules=["lin0"])).save_pretrained(tmp_path)
    with pytest.raises(
        peft_core.AdapterLoadError, match="no installed plugin handles peft_type 'LOHA'.*pip install peft-loha"
    ):
        PeftModel.from_pretrained(MLP(), tmp_path)


# --- 6. validation errors: one ConfigError naming field, value, what is allowed ---


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "LoraConfig.r=0 is invalid: input should be greater than 0 (Rank of the update"),
        ({"lora_dropout": 1.5}, "LoraConfig.lora_dropout=1.5 is invalid: input should be less than 1"),
        ({"bias": "some"}, "LoraConfig.bias='some' is invalid: input should be 'none', 'all' or 'lora_only'"),
    ],
)
def test_a_validation_error_names_field_value_and_range_without_pydantics_url(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LoraConfig(target_modules=["q"], **kwargs)
    assert message in str(info.value) and "https://" not in str(info.value) and "[type=" not in str(info.value)
    assert isinstance(info.value, ValueError)  # what the incumbent's users catch


def test_an_unknown_keyword_is_a_type_error_as_for_the_incumbents_dataclass() -> None:
    with pytest.raises(TypeError, match=r"got unknown arguments \['lora_alpah'\]") as info:
        LoraConfig(lora_alpah=8)
    assert isinstance(info.value, UnknownFieldError) and isinstance(info.value, ConfigError)
    with pytest.raises(TypeError):
        peft.LoraConfig(lora_alpah=8)  # type: ignore[call-arg]


# --- 7. set_adapter and trainability ---


def test_set_adapter_leaves_trainability_and_inference_mode_false_is_the_incumbents_behaviour() -> None:
    base = MLP()
    ours = get_peft_model(copy.deepcopy(base), LoraConfig(target_modules=["lin0"]))
    ours.add_adapter("other", LoraConfig(target_modules=["lin0"]))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(target_modules=["lin0"]))
    theirs.add_adapter("other", peft.LoraConfig(target_modules=["lin0"]))
    ours.set_adapter("other")
    assert ours.get_nb_trainable_parameters()[0] == 2 * 2 * 16 * 8  # both stay trainable (ours)
    theirs.set_adapter("other")
    ours.set_adapter("other", inference_mode=False)  # the incumbent's behaviour, one argument away
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in theirs.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "method", ["LoraConfig", "IA3Config", "AdaLoraConfig", "LoHaConfig", "LoKrConfig", "OFTConfig"]
)
def test_prefix_is_the_incumbents_parameter_name_prefix(method: str) -> None:
    # The incumbent's users (and its own tests) pick adapter parameters with `n.startswith/in model.prefix`.
    kwargs = {"target_modules": ["q_proj", "v_proj"]} | ({"total_step": 10} if method == "AdaLoraConfig" else {})
    ours = get_peft_model(tiny_llama(), getattr(peft_core, method)(**kwargs))
    theirs = peft.get_peft_model(tiny_llama(), getattr(peft, method)(**kwargs))
    assert ours.prefix == ours.base_model.prefix == theirs.prefix
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(ours.prefix in n for n in trainable)


def test_config_from_pretrained_takes_the_hub_arguments_and_refuses_others(tmp_path: Path) -> None:
    LoraConfig(r=4, target_modules=["q_proj"]).save_pretrained(tmp_path)
    config = PeftConfig.from_pretrained(tmp_path, revision="main", token=None, cache_dir=None)
    assert isinstance(config, LoraConfig) and config.r == 4
    assert peft.PeftConfig.from_pretrained(str(tmp_path), revision="main").r == 4  # the same call there
    with pytest.raises(TypeError, match="bogus"):
        PeftConfig.from_pretrained(tmp_path, bogus=1)
