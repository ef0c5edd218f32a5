"""peft-dora: DoRA (weight-decomposed low-rank adaptation) as a variant of peft-lora.

Use it through LoRA's config: ``LoraConfig(..., use_dora=True)``; checkpoints are
Hugging Face PEFT's (``peft_type: "LORA"``, ``use_dora: true``, ``lora_magnitude_vector``).
"""

from __future__ import annotations

from peft_dora.conv import DoraConv
from peft_dora.dora import DoraLayer, DoraMerge
from peft_dora.embedding import DoraEmbedding
from peft_dora.linear import DORA_CAPABILITIES, DoraLinear
from peft_dora.norms import direct_row_norms, row_norms
from peft_dora.variant import DoraVariant

__all__ = [
    "DORA_CAPABILITIES",
    "DoraConv",
    "DoraEmbedding",
    "DoraLayer",
    "DoraLinear",
    "DoraMerge",
    "DoraVariant",
    "direct_row_norms",
    "row_norms",
]
