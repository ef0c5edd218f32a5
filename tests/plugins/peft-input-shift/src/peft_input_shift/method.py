"""``InputShiftConfig`` and ``InputShiftTuner``: ``inputs_embeds = E[input_ids] + shift``."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from peft_core.contract import AdaptedModel, BaseTuner, Capabilities, ConfigError, PeftConfig


class InputShiftConfig(PeftConfig):
    """One learned vector per adapter, added to every input embedding (``token_dim`` from the model)."""

    peft_type: Literal["INPUT_SHIFT"] = "INPUT_SHIFT"
    token_dim: int | None = Field(default=None, gt=0, description="Embedding width; filled in from the model.")
    init: Literal["zeros", "hook"] = Field(default="zeros", description="Initial shift: zeros, or from a plugin hook.")


class InputShiftTuner(BaseTuner):
    name = "input_shift"
    config_class = InputShiftConfig
    targets_modules = False
    capabilities = Capabilities()  # not mergeable, no per-row batches, no hotswap, no weighting

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Any) -> PeftConfig:
        get_embeddings = getattr(model, "get_input_embeddings", None)
        embeddings = get_embeddings() if callable(get_embeddings) else None
        if not isinstance(embeddings, nn.Embedding):
            raise ConfigError("input_shift needs a model with get_input_embeddings() (a transformers model)")
        return config.model_copy(update={"token_dim": embeddings.embedding_dim})

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module:
        assert isinstance(config, InputShiftConfig) and config.token_dim is not None
        adapter = nn.Module()
        start = self.hooks.peft_input_shift_init(dim=config.token_dim) if config.init == "hook" else None
        adapter.shift = nn.Parameter(start if start is not None else torch.zeros(config.token_dim))
        return adapter

    def _shifted(self, model: AdaptedModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("input_ids") is None or kwargs.get("inputs_embeds") is not None:
            return kwargs
        shift = model.adapter_module(model.active_adapters[0]).get_parameter("shift")
        get_embeddings: Any = getattr(model.model, "get_input_embeddings")  # noqa: B009 (untyped nn.Module attribute)
        embeds: Tensor = get_embeddings()(kwargs.pop("input_ids"))
        return {**kwargs, "inputs_embeds": embeds + shift.to(embeds.dtype)}

    def prepare_inputs(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:  # model(input_ids, ...): name it, so that it can become inputs_embeds
            kwargs, args = {"input_ids": args[0], **kwargs}, args[1:]
        return args, self._shifted(model, kwargs)

    def prepare_generation_inputs(self, model: AdaptedModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._shifted(model, kwargs)  # every step, with or without a KV cache

    def adapter_state_dict(self, model: AdaptedModel, adapter_name: str) -> dict[str, Tensor]:
        return {"input_shift": model.adapter_module(adapter_name).get_parameter("shift")}
