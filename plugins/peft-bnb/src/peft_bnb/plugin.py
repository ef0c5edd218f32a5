"""The entry point of peft-bnb (group ``peft_core.plugins``, name ``bnb``): the layer hook.

For a bitsandbytes ``Linear4bit``/``Linear8bitLt`` target it answers with the quantized
layer of the method: LoRA (DoRA for ``use_dora=True``) and IA3. Other modules and other
methods are left to the next plugin and the tuner (the core refuses a quantized module
nobody takes, naming this plugin).
"""

from __future__ import annotations

from torch import nn

from peft_core.contract import AdapterLayer, BaseTuner, ConfigError, PeftConfig, hookimpl
from peft_ia3 import IA3Tuner
from peft_lora import LoraTuner


def _is_bitsandbytes(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "bitsandbytes"


@hookimpl
def peft_adapter_layer(
    tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig
) -> AdapterLayer | None:
    if not _is_bitsandbytes(target) or not isinstance(tuner, LoraTuner | IA3Tuner):
        return None
    # Imported here, not at the top: bitsandbytes takes seconds to import, and this module is
    # loaded with every peft-core plugin. A model with bitsandbytes layers has imported it already.
    from peft_bnb import layers
    from peft_bnb.quantized import bits_of

    if bits_of(target) is None:
        return None  # another bitsandbytes module (an embedding, say): not ours
    if isinstance(tuner, IA3Tuner):
        return layers.QuantizedIA3Linear(target)
    variant = tuner.variant(config)  # type: ignore[arg-type]
    if variant is None:
        return layers.QuantizedLoraLinear(target)
    if variant.flags == ("use_dora",):
        return layers.QuantizedDoraLinear(target)
    raise ConfigError(
        f"peft-bnb has no layer for the LoRA variant {type(variant).__name__} on a quantized "
        f"{type(target).__name__}; use plain LoRA or DoRA there, or exclude the module (exclude_modules)"
    )
