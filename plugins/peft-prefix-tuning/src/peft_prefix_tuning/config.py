"""``PrefixTuningConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "PREFIX_TUNING")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peft_prompt_tuning import PromptLearningConfig


class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: learned keys and values (``num_virtual_tokens`` per attention layer) that
    every layer attends to before the input, passed as the model's KV cache.

    ``token_dim`` and ``num_attention_heads`` are those of the keys/values: with grouped-query
    attention the key/value heads (filled in from the model).
    """

    peft_type: Literal["PREFIX_TUNING"] = "PREFIX_TUNING"
    encoder_hidden_size: int | None = Field(
        default=None, gt=0, description="Hidden width of the prefix projection (default: token_dim)."
    )
    prefix_projection: bool = Field(
        default=False, description="Compute the prefix with a two-layer MLP from smaller embeddings."
    )
    init_weights: Literal["zero"] | None = Field(
        default=None, description='None: random prefix; "zero": keys and values start at zero.'
    )
