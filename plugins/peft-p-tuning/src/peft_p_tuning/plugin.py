"""The entry point of peft-p-tuning (group ``peft_core.plugins``, name ``p_tuning``)."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_p_tuning.tuner import PTuningTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [PTuningTuner]
