"""The entry point of peft-ia3 (group ``peft_core.plugins``, name ``ia3``)."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_ia3.tuner import IA3Tuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [IA3Tuner]
