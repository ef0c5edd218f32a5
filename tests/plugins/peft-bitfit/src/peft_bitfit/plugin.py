"""Entry point ``bitfit`` in the group ``peft_core.plugins``."""

from __future__ import annotations

from peft_bitfit.tuner import BitFitTuner
from peft_core.contract import BaseTuner, hookimpl


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [BitFitTuner]
