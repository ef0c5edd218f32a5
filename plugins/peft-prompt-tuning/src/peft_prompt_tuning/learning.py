"""``PromptLearningConfig``: the fields every prompt-learning method shares, and reading them off a model.

Prompt tuning, p-tuning and prefix tuning wrap no module; they learn ``num_virtual_tokens``
vectors that the model receives besides its input. The sizes of those vectors come from
the model (``token_dim``, ``num_layers``, ``num_attention_heads``) and are filled in by the
tuner's ``prepare_config`` (``model_dimensions``), as Hugging Face PEFT fills them in, so
that the saved adapter_config.json holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator
from torch import nn

from peft_core.contract import ConfigError, PeftConfig, TaskType

#: The task types prompt learning runs on (each changes the inputs its own way).
PROMPT_TASKS = frozenset(
    {
        TaskType.CAUSAL_LM.value,
        TaskType.SEQ_CLS.value,
        TaskType.SEQ_2_SEQ_LM.value,
        TaskType.TOKEN_CLS.value,
        TaskType.QUESTION_ANS.value,
        TaskType.FEATURE_EXTRACTION.value,
    }
)


class PromptLearningConfig(PeftConfig):
    """Hugging Face PEFT's ``PromptLearningConfig``: virtual tokens and the model sizes they need.

    Prompt learning needs a ``task_type`` (it decides how the inputs change); the model
    sizes may be left unset and are read from the model's config.
    """

    num_virtual_tokens: int | None = Field(default=None, gt=0, description="Number of virtual tokens.")
    token_dim: int | None = Field(default=None, gt=0, description="Width of a virtual token (from the model).")
    num_transformer_submodules: int | None = Field(
        default=None, ge=1, le=2, description="2 for encoder-decoder models (SEQ_2_SEQ_LM), else 1 (from the task)."
    )
    num_attention_heads: int | None = Field(default=None, gt=0, description="Attention heads (from the model).")
    num_layers: int | None = Field(default=None, gt=0, description="Transformer layers (from the model).")
    modules_to_save: list[str] | None = Field(
        default=None, description="Modules trained in full and saved with the adapter (a classification head)."
    )

    @field_validator("modules_to_save", mode="before")
    @classmethod
    def _unique_modules(cls, value: Any) -> Any:
        # Hugging Face PEFT writes ["classifier", "score", "classifier", "score"] for SEQ_CLS.
        if isinstance(value, list | tuple | set | frozenset):
            return list(dict.fromkeys(sorted(value) if isinstance(value, set | frozenset) else value))
        return value

    @model_validator(mode="after")
    def _virtual_tokens_given(self) -> PromptLearningConfig:
        if self.num_virtual_tokens is None:
            raise ValueError("num_virtual_tokens is not set: give the number of virtual tokens to learn, e.g. 20")
        return self


def check_task(config: PeftConfig, method: str) -> str:
    """The config's task type, or a ``ConfigError`` saying which ones prompt learning takes."""
    task = config.task_type
    if task not in PROMPT_TASKS:
        allowed = ", ".join(sorted(PROMPT_TASKS))
        problem = "is not set" if task is None else f"is {task!r}"
        raise ConfigError(
            f"{type(config).__name__}.task_type {problem}: {method} changes the model's inputs by task; set "
            f"task_type to one of {allowed} (e.g. task_type='CAUSAL_LM'), or use the matching "
            "PeftModelFor... class"
        )
    return task


def _model_config(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    """The model's transformers config (the text part of a multimodal one) and its dict form."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None, {}
    values: dict[str, Any] = config.to_dict()
    text = values.get("text_config")
    return config, text if isinstance(text, dict) else values


def _first(values: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((values[key] for key in keys if values.get(key) is not None), None)


def model_dimensions(model: nn.Module, config: PromptLearningConfig) -> dict[str, int]:
    """The unset size fields of ``config``, read from ``model``'s transformers config.

    The same keys, in the same order, as Hugging Face PEFT reads them: layers from
    ``num_hidden_layers``/``num_layers``/``n_layer``, width from ``hidden_size``/``n_embd``/
    ``d_model``, heads from ``num_attention_heads``/``n_head``/``num_heads``/
    ``encoder_attention_heads``. ``num_transformer_submodules`` is 2 for SEQ_2_SEQ_LM.
    """
    original, values = _model_config(model)
    found: dict[str, int] = {}
    if config.num_layers is None:
        layers = getattr(original, "num_hidden_layers", None) if original is not None else None
        found["num_layers"] = (
            layers if layers is not None else _first(values, ("num_hidden_layers", "num_layers", "n_layer"))
        )
    if config.token_dim is None:
        found["token_dim"] = _first(values, ("hidden_size", "n_embd", "d_model"))
    if config.num_attention_heads is None:
        found["num_attention_heads"] = _first(
            values, ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
        )
    if config.num_transformer_submodules is None:
        found["num_transformer_submodules"] = 2 if config.task_type == TaskType.SEQ_2_SEQ_LM.value else 1
    unknown = sorted(key for key, value in found.items() if value is None)
    if unknown:
        raise ConfigError(
            f"cannot read {', '.join(unknown)} from the model's config (a {type(model).__name__}); "
            f"set {' and '.join(unknown)} in the {type(config).__name__}"
        )
    return found


def input_embeddings(model: nn.Module) -> nn.Module:
    """The model's token embedding (``get_input_embeddings()``), which virtual tokens live beside."""
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if not isinstance(embeddings, nn.Module):
        raise ConfigError(
            f"prompt learning needs the model's token embeddings, but {type(model).__name__} has no "
            "get_input_embeddings(); use a transformers model (or give yours that method)"
        )
    return embeddings
