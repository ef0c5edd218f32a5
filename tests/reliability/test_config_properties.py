"""Config validation (hypothesis): any JSON in any field gives a config or a ConfigError, never more.

Also proven in tests/core/test_config.py: each invalid value's message names the field and
the allowed values; unknown keys (warned when off, refused when on); the JSON format.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peft_core import ConfigError, PeftConfig
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from reliability.common import PROPERTIES

# Any value json.loads can produce, including Python's NaN/Infinity extension and huge ints.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CONFIG_CLASSES = [LoraConfig, IA3Config]


def _valid(config_class: type[PeftConfig]) -> dict[str, Any]:
    return config_class(target_modules=["q_proj", "v_proj"]).to_json_dict()


@PROPERTIES
@given(st.sampled_from(CONFIG_CLASSES), st.data())
def test_any_json_value_in_any_field_gives_a_config_or_one_config_error(
    config_class: type[PeftConfig], data: st.DataObject
) -> None:
    config_json = _valid(config_class)
    key = data.draw(st.sampled_from([*config_json, "new_key"]), label="key")
    config_json[key] = data.draw(json_values, label="value")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = config_class.from_json_dict(config_json)
    except ConfigError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert key in message or "peft_type" in message  # the message names the field
        return
    again = config_class.from_json_dict(json.loads(json.dumps(config.to_json_dict())))
    assert again == config  # what validates also round-trips


lora_fields = st.fixed_dictionaries(
    {
        "r": st.integers(1, 512),
        "lora_alpha": st.integers(1, 64) | st.floats(0.5, 64.0),
        "lora_dropout": st.floats(0.0, 0.99),
        "target_modules": st.lists(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), min_size=1, max_size=3),
        "bias": st.sampled_from(["none", "all", "lora_only"]),
        "use_rslora": st.booleans(),
        "rank_pattern": st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.integers(1, 64), max_size=2),
        "init_lora_weights": st.sampled_from([True, False, "gaussian"]),
    }
)


@PROPERTIES
@given(lora_fields)
def test_every_valid_lora_config_round_trips_through_json(fields: dict[str, Any]) -> None:
    config = LoraConfig(**fields)
    assert LoraConfig.from_json_dict(json.loads(json.dumps(config.to_json_dict()))) == config
    assert config.scaling() == pytest.approx(
        fields["lora_alpha"] / (fields["r"] ** (0.5 if fields["use_rslora"] else 1))
    )


non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
invalid_values = st.one_of(
    st.tuples(st.just("r"), st.integers(-(10**6), 0) | st.floats(0.01, 1e6).filter(lambda v: v % 1) | non_finite),
    st.tuples(st.just("lora_dropout"), st.floats(1.0, 1e6) | st.floats(-1e6, -1e-9) | non_finite),
    st.tuples(st.just("lora_alpha"), non_finite),
    st.tuples(st.just("rank_pattern"), st.dictionaries(st.just("q"), st.integers(-(10**6), 0), min_size=1)),
)


@PROPERTIES
@given(invalid_values)
def test_out_of_range_values_are_refused(field_and_value: tuple[str, Any]) -> None:
    field, value = field_and_value
    with pytest.raises(ConfigError, match=field):
        LoraConfig(target_modules=["q"], **{field: value})


def _off(value: Any) -> bool:
    """A feature switched off: null, false, empty, or a settings dict whose every entry is off."""
    if isinstance(value, dict) and value:
        return all(_off(v) for v in value.values())
    return value is None or value is False or value in ({}, [], "")


@PROPERTIES
@given(st.text(min_size=1, max_size=10).filter(lambda k: k not in LoraConfig.model_fields), json_values)
def test_an_unknown_key_is_ignored_when_off_and_refused_when_on(key: str, value: Any) -> None:
    config_json = _valid(LoraConfig) | {key: value}
    if key in LoraConfig.unsupported_keys or key in ("peft_version", "auto_mapping"):
        return
    neutral = _off(value)
    if neutral:
        with pytest.warns(UserWarning, match="ignoring unknown config keys"):
            LoraConfig.from_json_dict(config_json)
    else:
        with pytest.raises(ConfigError, match="unknown key"):
            LoraConfig.from_json_dict(config_json)
