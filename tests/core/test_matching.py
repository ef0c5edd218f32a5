"""Target matching: one rule for every name-list field, all-linear, layer selection, errors."""

from __future__ import annotations

import pytest
from torch import nn

from peft_core import TargetNotFoundError, inject_adapter_in_model
from peft_core.contract import AdapterLayer, layer_index, matches
from peft_lora import LoraConfig
from support.models import MLP, tiny_gpt2, tiny_llama


@pytest.mark.parametrize(
    ("path", "spec", "expected"),
    [
        ("mlp.c_fc", ["fc"], False),
        ("mlp.fc", ["fc"], True),
        ("fc", ["fc"], True),
        ("attn.q_proj", ["proj"], False),
        ("layers.0.attn.q_proj", ["attn.q_proj"], True),
        ("layers.0.attn.q_proj", r".*\.q_proj", True),
        ("layers.0.attn.q_proj", r"q_proj", False),  # a regex must match the whole path
        ("layers.0.attn.q_proj", None, False),
    ],
)
def test_matches(path: str, spec: object, expected: bool) -> None:
    assert matches(path, spec) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("model.layers.3.self_attn.q_proj", "layers", 3),
        ("model.layers.3.self_attn.q_proj", None, 3),
        ("transformer.h.1.attn.c_attn", ["h"], 1),
        ("blocks.2.experts.5.fc", "experts", 5),
        ("blocks.2.experts.5.fc", None, 2),
        ("lm_head", None, None),
    ],
)
def test_layer_index(path: str, pattern: object, expected: int | None) -> None:
    assert layer_index(path, pattern) == expected  # type: ignore[arg-type]


def _adapted(model: nn.Module) -> list[str]:
    return sorted(path for path, module in model.named_modules() if isinstance(module, AdapterLayer))


def test_all_linear_skips_the_output_head_of_a_causal_lm() -> None:
    model = inject_adapter_in_model(LoraConfig(target_modules="all-linear"), tiny_llama())
    adapted = _adapted(model)
    assert "lm_head" not in adapted
    assert len(adapted) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers


def test_all_linear_includes_conv1d_layers_of_gpt2() -> None:
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        model = inject_adapter_in_model(LoraConfig(target_modules="all-linear"), tiny_gpt2())
    assert _adapted(model) == sorted(
        f"transformer.h.{i}.{name}"
        for i in range(2)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )


def test_suffix_entries_respect_dotted_boundaries() -> None:
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        model = inject_adapter_in_model(LoraConfig(target_modules=["c_proj"]), tiny_gpt2())
    assert _adapted(model) == [f"transformer.h.{i}.{n}.c_proj" for i in range(2) for n in ("attn", "mlp")]


def test_an_entry_matching_nothing_is_an_error_naming_it_and_close_names() -> None:
    model = MLP()
    with pytest.raises(TargetNotFoundError) as info:
        inject_adapter_in_model(LoraConfig(target_modules=["lin0", "lin_1"]), model)
    message = str(info.value)
    assert "'lin_1'" in message and "closest: lin1" in message
    assert "'lin0'" not in message.split("matched no module")[1]
    assert _adapted(model) == []  # nothing was injected


def test_exclude_modules_and_its_unmatched_entries() -> None:
    model = inject_adapter_in_model(LoraConfig(target_modules=["lin0", "lin1"], exclude_modules=["lin1"]), MLP())
    assert _adapted(model) == ["lin0"]
    with pytest.raises(TargetNotFoundError, match="exclude_modules"):
        inject_adapter_in_model(LoraConfig(target_modules=["lin0"], exclude_modules=["nope"]), MLP())


def test_layers_to_transform_with_and_without_pattern() -> None:
    config = LoraConfig(target_modules=["q_proj"], layers_to_transform=[1], layers_pattern="layers")
    assert _adapted(inject_adapter_in_model(config, tiny_llama())) == ["model.layers.1.self_attn.q_proj"]
    config = LoraConfig(target_modules=["q_proj"], layers_to_transform=0)
    assert _adapted(inject_adapter_in_model(config, tiny_llama())) == ["model.layers.0.self_attn.q_proj"]


def test_regex_targets() -> None:
    config = LoraConfig(target_modules=r"model\.layers\.\d+\.self_attn\.(q|v)_proj")
    assert len(_adapted(inject_adapter_in_model(config, tiny_llama()))) == 4


def test_unsupported_module_type_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="cannot adapt 'model.layers.0.self_attn' of type LlamaAttention"):
        inject_adapter_in_model(LoraConfig(target_modules=["self_attn"]), tiny_llama())


def test_pattern_keys_that_match_no_target_are_errors() -> None:
    config = LoraConfig(target_modules=["lin0"], rank_pattern={"lin1": 2})
    with pytest.raises(TargetNotFoundError, match="rank_pattern"):
        inject_adapter_in_model(config, MLP())
