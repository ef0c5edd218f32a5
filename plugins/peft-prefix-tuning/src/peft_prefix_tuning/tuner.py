"""``PrefixTuningTuner``: prefix tuning (Li & Liang, 2021), the prefix passed as the model's KV cache.

Forward: ``past_key_values`` is a cache holding the prefix (unless the caller passes a
non-empty cache, which already holds it), ``attention_mask`` gets ones in front (for
SEQ_2_SEQ_LM: ``decoder_attention_mask``), position ids move by the prefix length; labels
and token type ids are unchanged (they describe the real tokens). Generate: the first
step (no cache yet, or every step with ``use_cache=False``) receives a fresh prefix cache,
later steps continue it; every step's mask covers the prefix.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import AdaptedModel, Capabilities, ConfigError, PeftConfig, TaskType, weights_will_be_loaded
from peft_prefix_tuning.cache import prefix_cache
from peft_prefix_tuning.config import PrefixTuningConfig
from peft_prefix_tuning.encoder import PrefixEncoder
from peft_prompt_tuning import PromptLearningConfig, PromptLearningTuner
from peft_prompt_tuning.inputs import adjust_ids, batch_size, named_inputs, needs_virtual_tokens, with_prefix_mask

SEQ_2_SEQ = TaskType.SEQ_2_SEQ_LM.value
# Where a forward's batch size can be read (an encoder-decoder model may get only encoder_outputs and labels).
BATCH_KEYS = ("input_ids", "inputs_embeds", "decoder_input_ids", "decoder_inputs_embeds", "labels")


def _kv_sizes(model: nn.Module, config: PrefixTuningConfig) -> dict[str, int]:
    """``token_dim``/``num_attention_heads`` of the keys and values: with grouped-query attention
    (a config with ``num_key_value_heads``) ``head_dim * num_key_value_heads`` and those heads,
    as Hugging Face PEFT sizes them."""
    model_config: Any = getattr(model, "config", None)
    values: dict[str, Any] = model_config.to_dict() if hasattr(model_config, "to_dict") else {}
    values = values.get("text_config") or values
    if "num_key_value_heads" not in values:
        return {}
    if values.get("global_head_dim") is not None or values.get("per_layer_config") is not None:
        raise ConfigError(
            "prefix tuning of models whose layers have keys and values of different sizes (global_head_dim, "
            "per_layer_config) is not supported; use prompt tuning or p-tuning for this model"
        )
    assert config.token_dim and config.num_attention_heads
    head_dim = values.get("head_dim") or config.token_dim // config.num_attention_heads
    heads = int(values["num_key_value_heads"])
    return {"token_dim": int(head_dim) * heads, "num_attention_heads": heads}


def _takes_cache(model: nn.Module) -> bool:
    parameters = inspect.signature(model.forward).parameters
    return "past_key_values" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class PrefixTuningTuner(PromptLearningTuner):
    """Learned keys and values of every attention layer, ``num_virtual_tokens`` long."""

    name = "prefix_tuning"
    config_class = PrefixTuningConfig
    capabilities = Capabilities()

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        prepared = super().prepare_config(model, config, targets)
        assert isinstance(prepared, PrefixTuningConfig)
        if not _takes_cache(model):
            raise ConfigError(
                f"prefix tuning passes its prefix as past_key_values, which {type(model).__name__}.forward does not "
                "take; use prompt tuning or p-tuning for this model"
            )
        if any(getattr(module, "gradient_checkpointing", False) for module in model.modules()):
            raise ConfigError(
                "prefix tuning passes its prefix in the KV cache, which gradient checkpointing does not keep; "
                "call model.gradient_checkpointing_disable() first, or use prompt tuning"
            )
        prepared = prepared.model_copy(update=_kv_sizes(model, prepared))
        assert prepared.token_dim and prepared.num_attention_heads
        if prepared.token_dim % prepared.num_attention_heads:
            raise ConfigError(
                f"token_dim={prepared.token_dim} is not a multiple of num_attention_heads="
                f"{prepared.num_attention_heads}: a key is heads x head_dim; set both to the model's sizes"
            )
        if prepared.encoder_hidden_size is None:
            prepared = prepared.model_copy(update={"encoder_hidden_size": prepared.token_dim})
        return prepared

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module:
        assert isinstance(config, PrefixTuningConfig)
        weight = next((p for p in model.parameters() if p.is_floating_point()), None)
        device = weight.device if isinstance(weight, Tensor) else None
        loading = weights_will_be_loaded()
        if loading and config.prefix_projection and not config.inference_mode:
            warnings.warn(
                f"adapter {adapter_name!r}: a PREFIX_TUNING checkpoint holds the projected prefix, not the projection; "
                "training continues on that prefix directly, without the projection",
                UserWarning,
                stacklevel=2,
            )
        return self.build_module(config, device, config.prefix_projection and not config.inference_mode and not loading)

    def build_module(self, config: PromptLearningConfig, device: torch.device | None, with_head: bool) -> PrefixEncoder:
        assert isinstance(config, PrefixTuningConfig)
        return PrefixEncoder(config, device, with_projection=with_head)

    def _cache(self, model: AdaptedModel, rows: int) -> Any:
        module, config = self.active(model)
        assert isinstance(config, PrefixTuningConfig)
        dtype = next((p.dtype for p in model.model.parameters() if p.is_floating_point()), None)
        prefix = module.tokens()
        return prefix_cache(prefix.to(dtype or prefix.dtype), config, rows, config.task_type == SEQ_2_SEQ)

    def prepare_inputs(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _, config = self.active(model)
        task, count = str(config.task_type), int(config.num_virtual_tokens or 0)
        inputs = named_inputs(model.model.forward, args, kwargs)
        mask_key = "decoder_attention_mask" if task == SEQ_2_SEQ else "attention_mask"
        if inputs.get(mask_key) is not None:
            inputs[mask_key] = with_prefix_mask(inputs[mask_key], count)
        adjust_ids(inputs, task, position_offset=count)
        if needs_virtual_tokens({"past_key_values": inputs.get("past_key_values")}):
            inputs["past_key_values"] = self._cache(model, batch_size(inputs, *BATCH_KEYS))
        return (), inputs

    def prepare_generation_inputs(self, model: AdaptedModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        _, config = self.active(model)
        task, count = str(config.task_type), int(config.num_virtual_tokens or 0)
        inputs = dict(kwargs)
        if task == SEQ_2_SEQ:
            if needs_virtual_tokens(inputs):
                inputs["past_key_values"] = self._cache(
                    model, batch_size(inputs, "decoder_input_ids", "decoder_inputs_embeds")
                )
            return inputs
        if inputs.get("attention_mask") is not None:
            inputs["attention_mask"] = with_prefix_mask(inputs["attention_mask"], count)
        adjust_ids(inputs, task, position_offset=count, quiet=True)
        if needs_virtual_tokens(inputs):
            inputs["past_key_values"] = self._cache(model, batch_size(inputs))
        return inputs
