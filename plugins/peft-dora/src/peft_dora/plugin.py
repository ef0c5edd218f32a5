"""The entry point of peft-dora (group ``peft_core.plugins``, name ``dora``).

It provides no tuner of its own: it answers peft-lora's ``peft_lora_variant`` hook for
configs whose only variant flag is ``use_dora``.
"""

from __future__ import annotations

from peft_core.contract import hookimpl
from peft_dora.variant import DoraVariant
from peft_lora import LoraConfig, LoraVariant


@hookimpl
def peft_lora_variant(config: LoraConfig) -> LoraVariant | None:
    flags = {flag for flag in config.variant_flags if getattr(config, flag)}
    return DoraVariant() if flags == set(DoraVariant.flags) else None
