"""The entry point of peft-adalora (group ``peft_core.plugins``, name ``adalora``)."""

from __future__ import annotations

from peft_adalora.tuner import AdaLoraTuner
from peft_core.contract import BaseTuner, hookimpl


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [AdaLoraTuner]
