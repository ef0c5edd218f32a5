"""``LoraVariant``: what a plugin extending LoRA supplies (peft-dora is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import nn

if TYPE_CHECKING:
    from peft_lora.config import LoraConfig
    from peft_lora.layer import LoraLayer


class LoraVariant:
    """A change of LoRA's math, selected by flags of ``LoraConfig`` (``flags``).

    The variant's layers subclass peft-lora's (``Linear``, ``Embedding``, ``Conv``) and
    declare their own ``capabilities``: nothing LoRA can do is inherited silently.
    """

    #: The ``LoraConfig`` flags this variant implements, e.g. ``("use_dora",)``.
    flags: ClassVar[tuple[str, ...]] = ()

    def create_layer(self, target: nn.Module, config: LoraConfig) -> LoraLayer | None:
        """A bare layer of the variant wrapping ``target``; None if the variant does not support its type.

        Called instead of LoRA's own layer choice (the engine then adds the adapter).
        None refuses the module with an error naming its type.
        """
        return None
