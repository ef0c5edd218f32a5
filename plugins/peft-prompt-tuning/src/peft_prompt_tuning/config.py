"""``PromptTuningConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "PROMPT_TUNING")."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from peft_prompt_tuning.learning import PromptLearningConfig


class PromptTuningInit(str, enum.Enum):
    """How the virtual tokens start (``prompt_tuning_init``); plain strings are accepted too."""

    RANDOM = "RANDOM"  # N(0, 1), like a fresh nn.Embedding
    TEXT = "TEXT"  # the embeddings of prompt_tuning_init_text's tokens, repeated to length
    SAMPLE_VOCAB = "SAMPLE_VOCAB"  # embeddings of tokens drawn uniformly from the vocabulary

    def __str__(self) -> str:
        return self.value


class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning: ``num_virtual_tokens`` learned embeddings put in front of the input embeddings.

    With ``prompt_tuning_init="TEXT"``, ``tokenizer_name_or_path`` (a local folder or a name
    transformers can resolve) and ``prompt_tuning_init_text`` give the starting tokens.
    """

    peft_type: Literal["PROMPT_TUNING"] = "PROMPT_TUNING"
    prompt_tuning_init: Literal["RANDOM", "TEXT", "SAMPLE_VOCAB"] = Field(
        default="RANDOM", description="Initial virtual tokens: RANDOM, TEXT or SAMPLE_VOCAB."
    )
    prompt_tuning_init_text: str | None = Field(default=None, description="Text whose tokens start the prompt (TEXT).")
    tokenizer_name_or_path: str | None = Field(default=None, description="Tokenizer of prompt_tuning_init_text (TEXT).")
    tokenizer_kwargs: dict[str, Any] | None = Field(
        default=None, description="Keyword arguments of AutoTokenizer.from_pretrained (TEXT)."
    )

    @field_validator("prompt_tuning_init", mode="before")
    @classmethod
    def _init_value(cls, value: Any) -> Any:
        return value.value if isinstance(value, PromptTuningInit) else value

    @model_validator(mode="after")
    def _text_init_is_complete(self) -> PromptTuningConfig:
        if self.prompt_tuning_init == "TEXT":
            missing = [
                name for name in ("tokenizer_name_or_path", "prompt_tuning_init_text") if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    f"prompt_tuning_init='TEXT' needs {' and '.join(missing)}: set them, or use "
                    "prompt_tuning_init='RANDOM'"
                )
        elif self.tokenizer_kwargs:
            raise ValueError("tokenizer_kwargs is only used with prompt_tuning_init='TEXT'; remove it")
        return self
