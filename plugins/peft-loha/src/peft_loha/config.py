"""``LoHaConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "LOHA")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peft_lycoris import LycorisConfig


class LoHaConfig(LycorisConfig):
    """Low-rank Hadamard product: ``delta W = (w1_a w1_b) * (w2_a w2_b) * alpha / r`` (elementwise ``*``).

    Each factor pair has rank ``r``, so ``delta W`` can reach rank ``r**2``. ``w2_b`` starts
    at zero (``init_weights=True``), so the model starts as the base model.
    """

    peft_type: Literal["LOHA"] = "LOHA"
    init_weights: bool = Field(default=True, description="True: w2_b starts at zero (no change); False: all random.")
