"""The entry point of peft-lokr (group ``peft_core.plugins``, name ``lokr``) and its tuner."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_lokr.config import LoKrConfig
from peft_lokr.layer import LoKrLayer
from peft_lycoris import LycorisTuner, default_targets


class LoKrTuner(LycorisTuner):
    """LoKr for nn.Linear, nn.Conv1d and nn.Conv2d."""

    name = "lokr"
    prefix = "lokr_"
    config_class = LoKrConfig
    layer_class = LoKrLayer
    default_target_modules = default_targets("peft_lokr")


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [LoKrTuner]
