"""``PromptEncoderConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "P_TUNING")."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import Field, field_validator

from peft_prompt_tuning import PromptLearningConfig


class PromptEncoderReparameterizationType(str, enum.Enum):
    """The prompt encoder (``encoder_reparameterization_type``); plain strings are accepted too."""

    MLP = "MLP"
    LSTM = "LSTM"

    def __str__(self) -> str:
        return self.value


class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: virtual tokens ``h(E)`` where ``E`` are learned embeddings and ``h`` an MLP
    (three layers, ReLU) or a bidirectional LSTM followed by a two-layer MLP."""

    peft_type: Literal["P_TUNING"] = "P_TUNING"
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = Field(
        default="MLP", description="The prompt encoder: MLP or LSTM."
    )
    encoder_hidden_size: int | None = Field(
        default=None, gt=0, description="Hidden width of the prompt encoder (default: token_dim)."
    )
    encoder_num_layers: int = Field(default=2, gt=0, description="LSTM layers (the MLP has 3 layers whatever this is).")
    encoder_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout between LSTM layers.")

    @field_validator("encoder_reparameterization_type", mode="before")
    @classmethod
    def _type_value(cls, value: Any) -> Any:
        return value.value if isinstance(value, PromptEncoderReparameterizationType) else value
