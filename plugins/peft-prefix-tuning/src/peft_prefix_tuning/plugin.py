"""The entry point of peft-prefix-tuning (group ``peft_core.plugins``, name ``prefix_tuning``)."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_prefix_tuning.tuner import PrefixTuningTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [PrefixTuningTuner]
