"""Targeting: every name-list entry that matches no module is an error naming it and the closest names.

Also proven in tests/core/test_matching.py: the matching rule itself (``fc`` never matches
``c_fc``), regex targets, layer selection.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from torch import nn

from peft_core import ConfigError, PeftConfig, TargetNotFoundError, inject_adapter_in_model
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from reliability.common import Snapshot, X, incumbent
from support.models import MLP

UNMATCHED = [
    (LoraConfig, {"target_modules": ["lin0", "lin_1"]}, "target_modules", "lin_1", "lin1"),
    (LoraConfig, {"target_modules": ["lin0"], "exclude_modules": ["lin_1"]}, "exclude_modules", "lin_1", "lin1"),
    (LoraConfig, {"target_modules": ["lin0"], "modules_to_save": ["haed"]}, "modules_to_save", "haed", "head"),
    (LoraConfig, {"target_modules": ["lin0", "lin1"], "rank_pattern": {"lin_1": 2}}, "rank_pattern", "lin_1", "lin1"),
    (LoraConfig, {"target_modules": ["lin0", "lin1"], "alpha_pattern": {"lin_1": 2}}, "alpha_pattern", "lin_1", "lin1"),
    (IA3Config, {"target_modules": r"lin\d", "feedforward_modules": ["lin_1"]}, "feedforward_modules", "lin_1", "lin1"),
]


@pytest.mark.parametrize(("config_class", "fields", "field", "entry", "closest"), UNMATCHED)
def test_an_entry_that_matches_nothing_is_an_error_naming_it_and_the_closest_names(
    config_class: type[PeftConfig], fields: dict[str, Any], field: str, entry: str, closest: str
) -> None:
    model = MLP()
    before = Snapshot.of(model, X)
    with pytest.raises(TargetNotFoundError) as info:
        inject_adapter_in_model(config_class(**fields), model)
    assert str(info.value).startswith(f"{field}: 1 entry matched no module:\n  {entry!r} (closest: {closest}")
    before.assert_same(Snapshot.of(model, X))


@pytest.mark.incumbent
@pytest.mark.parametrize(("config_class", "fields", "field", "entry", "closest"), UNMATCHED[:5])
def test_incumbent_accepts_entries_that_match_nothing(
    config_class: type[PeftConfig], fields: dict[str, Any], field: str, entry: str, closest: str
) -> None:
    peft = incumbent()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # at most a warning (exclude/rank/alpha); target_modules: not even that
        model = peft.inject_adapter_in_model(peft.LoraConfig(**fields), MLP())
    assert any("lora_A" in name for name, _ in model.named_parameters())


class FeedForward(nn.Module):
    """Two layers whose names end alike: ``fc`` and ``c_fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.c_fc = nn.Linear(4, 4)

    def forward(self, x: Any) -> Any:
        return self.c_fc(self.fc(x))


def test_feedforward_fc_does_not_mark_c_fc() -> None:
    model = inject_adapter_in_model(IA3Config(target_modules=["fc", "c_fc"], feedforward_modules=["fc"]), FeedForward())
    assert model.fc.is_feedforward == {"default": True}
    assert model.c_fc.is_feedforward == {"default": False}
    assert model.c_fc.ia3_l["default"].shape == (4, 1)  # output scaling, not input


@pytest.mark.incumbent
def test_incumbent_feedforward_fc_also_marks_c_fc() -> None:
    peft = incumbent()
    config = peft.IA3Config(target_modules=["fc", "c_fc"], feedforward_modules=["fc"])
    model = peft.get_peft_model(FeedForward(), config)
    assert model.base_model.model.c_fc.is_feedforward  # silently input-scaled


@pytest.mark.parametrize("field", ["target_modules", "exclude_modules"])
def test_a_regex_that_does_not_compile_is_a_config_error(field: str) -> None:
    fields: dict[str, Any] = {"target_modules": ["lin0"], field: "lin(0"}
    with pytest.raises(
        ConfigError, match=rf"LoraConfig.{field}='lin\(0' is invalid: 'lin\(0' is not a valid regular expression"
    ):
        LoraConfig(**fields)
    with pytest.raises(ConfigError, match="feedforward_modules"):
        IA3Config(target_modules=["lin0"], feedforward_modules="lin(0")


@pytest.mark.incumbent
def test_incumbent_a_bad_regex_is_a_raw_re_error_at_injection() -> None:
    import re

    peft = incumbent()
    config = peft.LoraConfig(target_modules="lin(0")  # accepted
    with pytest.raises(re.error):
        peft.get_peft_model(MLP(), config)
