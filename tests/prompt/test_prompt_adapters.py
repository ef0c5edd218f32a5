"""Prompt-learning adapters on one model: switching, disabling, refusals, trainability, configs.

Several adapters of one method live on one model and ``set_adapter`` picks the one in
use (each computing exactly what it computes alone); ``disable_adapter`` gives the base
model's outputs; what the methods do not support (merging, per-row batches, hotswapping,
weighted combination, two active adapters) is refused with one clear error each.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from peft_core import (
    AdapterLoadError,
    ConfigError,
    MergeError,
    PeftError,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    hotswap_adapter,
)
from peft_p_tuning import PromptEncoderConfig
from peft_prefix_tuning import PrefixTuningConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import tiny_bert, tiny_gpt2, tiny_llama, token_ids
from support.prompt_cases import add_noise

IDS = token_ids(batch=2, length=6)
CONFIGS = {
    "prompt": lambda n: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "p_tuning": lambda n: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=8),
    "prefix": lambda n: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
}


@torch.no_grad()
def _logits(model: nn.Module) -> torch.Tensor:
    logits: torch.Tensor = model(input_ids=IDS).logits
    return logits[:, -IDS.shape[1] :]


@pytest.mark.parametrize("method", list(CONFIGS))
def test_set_adapter_switches_between_adapters_that_each_compute_what_they_compute_alone(method: str) -> None:
    base = tiny_llama()
    model = get_peft_model(copy.deepcopy(base), CONFIGS[method](3))
    add_noise(model, seed=1)
    model.add_adapter("other", CONFIGS[method](5))
    add_noise(model, seed=2)  # moves both; "default" is read again below
    first = get_peft_model_state_dict(model, "default")
    alone = get_peft_model(copy.deepcopy(base), CONFIGS[method](3))
    with torch.no_grad():
        alone.base_model.adapter_module("default").embedding.weight.copy_(first["prompt_embeddings"])
    alone.eval()
    model.eval()
    assert model.active_adapters == ["default"]
    if method != "p_tuning":  # p-tuning's saved form is the encoder's output, compared through save/load below
        torch.testing.assert_close(_logits(model), _logits(alone), atol=1e-6, rtol=0)
    default = _logits(model)
    model.set_adapter("other")
    other = _logits(model)
    assert not torch.allclose(other, default, atol=1e-3)
    model.set_adapter("default")
    torch.testing.assert_close(_logits(model), default, atol=0, rtol=0)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model), _logits(base), atol=0, rtol=0)
    model.delete_adapter("default")
    assert model.active_adapters == ["other"]
    torch.testing.assert_close(_logits(model), other, atol=0, rtol=0)


def test_p_tuning_adapters_switch_like_their_saved_forms(tmp_path: Path) -> None:
    base = tiny_gpt2()
    model = get_peft_model(copy.deepcopy(base), CONFIGS["p_tuning"](3))
    model.add_adapter("other", CONFIGS["p_tuning"](4))
    add_noise(model)
    model.eval()
    model.save_pretrained(tmp_path)
    expected = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        expected[name] = _logits(model)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    loaded.load_adapter(tmp_path / "other", "other")
    for name in ("default", "other"):
        loaded.set_adapter(name)
        torch.testing.assert_close(_logits(loaded), expected[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_what_prompt_learning_does_not_support_is_refused_clearly(method: str, tmp_path: Path) -> None:
    model = get_peft_model(tiny_gpt2(), CONFIGS[method](3))
    model.add_adapter("other", CONFIGS[method](3))
    model.save_pretrained(tmp_path)
    with pytest.raises(MergeError, match="cannot be merged into its weights"):
        model.merge_adapter()
    with pytest.raises(MergeError, match="cannot be merged"):
        model.merge_and_unload()
    with pytest.raises(PeftError, match=r"per-row adapters .* not supported by \w+ \(capabilities.per_row\)"):
        model(input_ids=IDS, adapter_names=["default", "other"])
    with pytest.raises(PeftError, match="uses one adapter at a time"):
        model.set_adapter(["default", "other"])
    with pytest.raises(AdapterLoadError, match=r"do not declare hotswapping \(capabilities.hotswap\)"):
        hotswap_adapter(model, tmp_path)
    with pytest.raises(PeftError, match="cannot be combined with add_weighted_adapter"):
        model.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix", combination_type="linear")
    assert set(model.peft_config) == {"default", "other"}  # nothing was added or changed


def test_the_trainable_tensors_are_the_virtual_tokens_and_the_classifier_copy() -> None:
    model = get_peft_model(tiny_bert(), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == [
        "base_model.adapter_modules.default.embedding.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
        "base_model.model.classifier.modules_to_save.default.weight",
    ]
    assert model.get_nb_trainable_parameters()[0] == 4 * 32 + 2 * 32 + 2
    assert set(get_peft_model_state_dict(model)) == {
        "prompt_embeddings",
        "base_model.classifier.weight",
        "base_model.classifier.bias",
    }


def test_the_users_config_is_not_changed_and_the_stored_one_has_the_model_sizes() -> None:
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    before = config.model_dump()
    model = get_peft_model(tiny_llama(), config)
    assert config.model_dump() == before
    stored = model.peft_config["default"]
    assert stored is not config
    # Llama-tiny: 2 layers, hidden 32, 4 query heads, 2 key/value heads of 8: the prefix is of the KV heads.
    assert (stored.num_layers, stored.token_dim, stored.num_attention_heads) == (2, 16, 2)
    assert (stored.num_transformer_submodules, stored.encoder_hidden_size) == (1, 16)
    assert model.base_model.adapter_module("default").embedding.weight.shape == (4, 2 * 2 * 16)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PromptTuningConfig(num_virtual_tokens=4), r"task_type is not set: .* set task_type to one of"),
        (PromptTuningConfig(task_type="TEXT_GEN", num_virtual_tokens=4), "task_type is 'TEXT_GEN'"),
        (
            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, num_transformer_submodules=2),
            "num_transformer_submodules=2 is for encoder-decoder models",
        ),
    ],
)
def test_a_config_prompt_learning_cannot_run_is_one_clear_error(config: PromptTuningConfig, message: str) -> None:
    base = tiny_gpt2()
    before = copy.deepcopy(base.state_dict())
    with pytest.raises(ConfigError, match=message):
        get_peft_model(base, config)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert all(p.requires_grad for p in base.parameters())  # nothing was frozen


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task_type": "CAUSAL_LM"}, "num_virtual_tokens is not set"),
        ({"task_type": "CAUSAL_LM", "num_virtual_tokens": 0}, r"num_virtual_tokens=0 is invalid"),
        ({"num_virtual_tokens": 2, "prompt_tuning_init": "TEXT"}, "needs tokenizer_name_or_path and"),
        ({"num_virtual_tokens": 2, "prompt_tuning_init": "WORDS"}, r"prompt_tuning_init='WORDS' is invalid"),
        ({"num_virtual_tokens": 2, "tokenizer_kwargs": {"use_fast": True}}, "only used with prompt_tuning_init='TEXT'"),
    ],
)
def test_invalid_prompt_tuning_fields_name_the_field_and_the_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PromptTuningConfig(**options)  # type: ignore[arg-type]


def test_prefix_tuning_refuses_gradient_checkpointing_and_models_without_a_cache() -> None:
    model = tiny_llama()
    model.gradient_checkpointing_enable()
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        get_peft_model(model, CONFIGS["prefix"](2))

    class NoCache(nn.Module):
        config = tiny_gpt2().config

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return input_ids

    with pytest.raises(ConfigError, match="passes its prefix as past_key_values"):
        get_peft_model(NoCache(), CONFIGS["prefix"](2))
