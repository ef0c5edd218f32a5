"""``VirtualTokenTuner``: methods whose virtual tokens go in front of the input embeddings.

Prompt tuning and p-tuning differ only in how the virtual tokens are computed (the
adapter module's ``tokens()``); how the model receives them is here, by task type:

- forward: ``inputs_embeds = [virtual tokens; embed(input_ids)]``, ``attention_mask`` gets
  ones in front, ``labels`` get ignored positions in front (CAUSAL_LM, TOKEN_CLS), token
  type ids get type 0 (SEQ_CLS, TOKEN_CLS, QUESTION_ANS) and position ids are dropped (the
  model counts positions over the whole sequence); QUESTION_ANS answer positions move
  by the number of virtual tokens. SEQ_2_SEQ_LM: only the encoder input gets them.
- generate (CAUSAL_LM): the first step (no KV cache yet, or ``use_cache=False``) receives the
  virtual tokens; later steps continue the cache that holds them, their attention mask
  covering them. SEQ_2_SEQ_LM: ``prepare_generate`` puts them before the encoder's input,
  which the encoder runs on once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import AdaptedModel, Capabilities, ConfigError, PeftConfig, TaskType
from peft_prompt_tuning.base import PromptLearningTuner
from peft_prompt_tuning.inputs import (
    KEEPS_TOKEN_TYPES,
    adjust_ids,
    batch_size,
    embed,
    named_inputs,
    needs_virtual_tokens,
    with_prefix_labels,
    with_prefix_mask,
    with_prefix_token_types,
)
from peft_prompt_tuning.learning import PromptLearningConfig, input_embeddings

SEQ_2_SEQ = TaskType.SEQ_2_SEQ_LM.value
#: Tasks whose per-token labels line up with the model's positions, virtual tokens included.
PER_TOKEN_LABELS = frozenset({TaskType.CAUSAL_LM.value, TaskType.TOKEN_CLS.value})


class VirtualTokenTuner(PromptLearningTuner):
    """Base of prompt tuning and p-tuning; subclasses give ``create_model_adapter``."""

    capabilities = Capabilities()

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        prepared = super().prepare_config(model, config, targets)
        assert isinstance(prepared, PromptLearningConfig)
        input_embeddings(model)  # fails early, with the reason, for a model without token embeddings
        if prepared.task_type != SEQ_2_SEQ and prepared.num_transformer_submodules != 1:
            raise ConfigError(
                f"num_transformer_submodules={prepared.num_transformer_submodules} is for encoder-decoder models "
                f"(task_type='SEQ_2_SEQ_LM'); task_type {prepared.task_type!r} takes 1 (or leave it unset)"
            )
        return prepared

    def _batch_tokens(self, model: AdaptedModel, rows: int, like: Tensor) -> Tensor:
        """The active adapter's virtual tokens for ``rows`` rows (first ``num_virtual_tokens`` of them;
        the encoder's share for SEQ_2_SEQ_LM), in ``like``'s dtype: (rows, tokens, width)."""
        module, config = self.active(model)
        tokens = module.tokens()[: config.num_virtual_tokens].to(like.dtype)
        return tokens.unsqueeze(0).expand(rows, -1, -1)

    def _prepend(self, model: AdaptedModel, inputs: dict[str, Any]) -> None:
        """``input_ids``/``inputs_embeds`` -> ``inputs_embeds`` with the virtual tokens in front, in place."""
        rows = batch_size(inputs)
        embeds = embed(input_embeddings(model.model), inputs, "input_ids", "inputs_embeds")
        inputs["inputs_embeds"] = torch.cat((self._batch_tokens(model, rows, embeds), embeds), dim=1)

    def prepare_inputs(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _, config = self.active(model)
        task, count = str(config.task_type), int(config.num_virtual_tokens or 0)
        inputs = named_inputs(model.model.forward, args, kwargs)
        if inputs.get("attention_mask") is not None:
            inputs["attention_mask"] = with_prefix_mask(inputs["attention_mask"], count)
        adjust_ids(inputs, task, position_offset=None)
        if task in KEEPS_TOKEN_TYPES and inputs.get("token_type_ids") is not None:
            inputs["token_type_ids"] = with_prefix_token_types(inputs["token_type_ids"], count)
        if task in PER_TOKEN_LABELS and inputs.get("labels") is not None:
            inputs["labels"] = with_prefix_labels(inputs["labels"], count)
        if task == TaskType.QUESTION_ANS.value:  # answer spans index the real tokens, now after the virtual ones
            for key in ("start_positions", "end_positions"):
                if inputs.get(key) is not None:
                    inputs[key] = inputs[key] + count
        self._prepend(model, inputs)
        return (), inputs

    def prepare_generate(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _, config = self.active(model)
        if config.task_type != SEQ_2_SEQ:
            return args, kwargs
        generate: Callable[..., Any] = getattr(model.model, "generate")  # noqa: B009 (nn.Module's __getattr__ is untyped)
        inputs = named_inputs(generate, args, kwargs)
        if inputs.get("inputs") is not None and inputs.get("input_ids") is None:
            inputs["input_ids"] = inputs.pop("inputs")  # generate's first parameter
        adjust_ids(inputs, SEQ_2_SEQ, position_offset=None)
        if inputs.pop("encoder_outputs", None) is not None:
            warnings.warn(
                "encoder_outputs are ignored with prompt learning: the encoder must see the virtual tokens",
                UserWarning,
                stacklevel=4,
            )
        if inputs.get("attention_mask") is not None:
            inputs["attention_mask"] = with_prefix_mask(inputs["attention_mask"], int(config.num_virtual_tokens or 0))
        self._prepend(model, inputs)
        return (), inputs

    def prepare_generation_inputs(self, model: AdaptedModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        _, config = self.active(model)
        task = str(config.task_type)
        if task == SEQ_2_SEQ:
            return kwargs  # the encoder received the virtual tokens (prepare_generate)
        inputs = dict(kwargs)
        if inputs.get("attention_mask") is not None:
            inputs["attention_mask"] = with_prefix_mask(inputs["attention_mask"], int(config.num_virtual_tokens or 0))
        adjust_ids(inputs, task, position_offset=None, quiet=True)
        if needs_virtual_tokens(inputs):
            if inputs.get("use_cache") is False:
                inputs["past_key_values"] = None  # each step runs on the whole sequence
            self._prepend(model, inputs)
            inputs["input_ids"] = None
        return inputs
