"""``BaseTuner.prepare_generate``: generate's own arguments, changed once per call with adapters on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import nn

import peft_core
from peft_core import get_peft_model
from peft_core.contract import AdaptedModel, BaseTuner, PeftConfig
from support.models import tiny_gpt2, token_ids


class LongerConfig(PeftConfig):
    peft_type: Literal["LONGER_TEST"] = "LONGER_TEST"


class LongerTuner(BaseTuner):
    """Asks generate for 3 more tokens than the caller did (a module-free adapter with one tensor)."""

    name = "longer_test"
    config_class = LongerConfig
    targets_modules = False
    calls: ClassVar[list[dict[str, Any]]] = []

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module:
        adapter = nn.Module()
        adapter.unused = nn.Parameter(torch.zeros(1))
        return adapter

    def prepare_generate(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        LongerTuner.calls.append(dict(kwargs))
        longer = kwargs["max_new_tokens"] + 3
        return args, {**kwargs, "max_new_tokens": longer, "min_new_tokens": longer}


@pytest.fixture
def longer() -> Iterator[None]:
    peft_core.register_tuner(LongerTuner)
    LongerTuner.calls.clear()
    try:
        yield
    finally:
        peft_core.registry.unregister_tuner("longer_test")


@pytest.mark.usefixtures("longer")
def test_prepare_generate_changes_the_arguments_once_per_call_and_not_when_disabled() -> None:
    model = get_peft_model(tiny_gpt2(), LongerConfig())
    prompt = token_ids(batch=1, length=4)
    generated = model.generate(input_ids=prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert generated.shape[1] == 4 + 2 + 3
    assert len(LongerTuner.calls) == 1 and LongerTuner.calls[0]["max_new_tokens"] == 2
    with model.disable_adapter():
        plain = model.generate(input_ids=prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert plain.shape[1] == 4 + 2 and len(LongerTuner.calls) == 1
    assert torch.equal(plain[:, :5], generated[:, :5])  # the adapter changes nothing else (the first step)
