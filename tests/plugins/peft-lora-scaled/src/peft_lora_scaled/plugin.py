"""Entry point ``lora_scaled`` in the group ``peft_core.plugins``: only the layer hook."""

from __future__ import annotations

from torch import nn

from peft_core.contract import AdapterLayer, BaseTuner, PeftConfig, hookimpl
from peft_lora_scaled.layer import ScaledLinear, ScaledLoraLinear


@hookimpl
def peft_adapter_layer(
    tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig
) -> AdapterLayer | None:
    if tuner.name != "lora" or not isinstance(target, ScaledLinear):
        return None  # not ours: the next plugin, then the tuner itself, decides
    return ScaledLoraLinear(target)  # the engine adds the adapter
