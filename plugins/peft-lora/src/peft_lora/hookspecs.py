"""Hooks peft-lora declares for other plugins (through ``peft_add_hookspecs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peft_core.contract import hookspec

if TYPE_CHECKING:
    from peft_lora.config import LoraConfig
    from peft_lora.variant import LoraVariant


@hookspec(firstresult=True)
def peft_lora_variant(config: LoraConfig) -> LoraVariant | None:
    """Return the variant that implements ``config``'s variant flags (``use_dora``...), or None.

    Called once per new LoRA adapter whose config sets a flag of
    ``LoraConfig.variant_flags``. The first non-None answer wins; without one, adding the
    adapter fails with an error naming the distribution that provides the flag.
    """
