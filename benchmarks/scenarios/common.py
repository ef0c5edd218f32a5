"""Model set-up shared by the scenarios: the same seeds, configs and steps for every backend."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import models
from benchmarks.backends import Backend
from benchmarks.context import Context

RANK = 16
QUICK_RANK = 4


def rank(ctx: Context) -> int:
    return QUICK_RANK if ctx.quick else RANK


def lora_config(backend: Backend, ctx: Context, **kwargs: Any) -> Any:
    """LoRA r=16 (alpha 32, no dropout) on every linear layer but the output head."""
    r = rank(ctx)
    settings: dict[str, Any] = dict(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear")
    return backend.lora_config(**(settings | kwargs))


def wrap(backend: Backend, model: nn.Module, config: Any, adapter_name: str = "default") -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices on GPT-2
        wrapped: nn.Module = backend.get_peft_model(model, config, adapter_name=adapter_name)
    return wrapped


def build(model_name: str, ctx: Context) -> nn.Module:
    builder: Callable[[bool], nn.Module] = getattr(models, model_name)
    return builder(ctx.quick).to(ctx.device)


def batch(model: nn.Module, ctx: Context, rows: int = 8, tokens: int = 128) -> Tensor:
    vocab = int(model.config.vocab_size)
    if ctx.quick:
        rows, tokens = min(rows, 4), min(tokens, 8)
    return models.token_batch(rows, tokens, vocab, ctx.device)


def frozen_floor(model: nn.Module) -> nn.Module:
    """The base with every weight frozen but gradients still flowing through every layer."""
    for param in model.parameters():
        param.requires_grad_(False)
    model.enable_input_require_grads()
    return model


def training_step(model: nn.Module, ids: Tensor) -> Callable[[], None]:
    """Forward, causal-LM loss, backward, AdamW on whatever is trainable."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None
    model.train()

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def inference(model: nn.Module, ids: Tensor, **kwargs: Any) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, **kwargs)

    return forward
