"""The entry point of peft-loha (group ``peft_core.plugins``, name ``loha``) and its tuner."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_loha.config import LoHaConfig
from peft_loha.layer import LoHaLayer
from peft_lycoris import LycorisTuner, default_targets


class LoHaTuner(LycorisTuner):
    """LoHa for nn.Linear, nn.Conv1d and nn.Conv2d."""

    name = "loha"
    prefix = "hada_"
    config_class = LoHaConfig
    layer_class = LoHaLayer
    default_target_modules = default_targets("peft_loha")


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [LoHaTuner]
