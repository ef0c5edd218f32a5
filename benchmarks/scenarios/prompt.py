"""Prompt learning: a prompt-tuning and a prefix-tuning training step, and generation with a KV cache.

llama-tiny, 20 virtual tokens. The training floor is the frozen base with gradients
flowing through every layer (``enable_input_require_grads``) on the same number of
positions the adapted model computes (128 + 20 for prompt tuning, whose virtual tokens
are extra positions; 128 for prefix tuning, whose prefix is extra keys and values only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.backends import BACKENDS, Backend, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import batch, build, frozen_floor, training_step, wrap

VIRTUAL_TOKENS = 20


def _config(backend: Backend, method: str, ctx: Context) -> Any:
    tokens = 4 if ctx.quick else VIRTUAL_TOKENS
    factory = backend.prompt_tuning_config if method == "prompt" else backend.prefix_tuning_config
    return factory(task_type="CAUSAL_LM", num_virtual_tokens=tokens)


def _floor_with_extra_positions(model: nn.Module, ids: Tensor, extra: int) -> Callable[[], None]:
    """The floor step on ``extra`` more positions than ``ids`` (the virtual tokens' share of the work)."""
    model = frozen_floor(model)
    model.train()
    longer = torch.cat([ids[:, :extra], ids], dim=1)
    labels = torch.cat([torch.full_like(ids[:, :extra], -100), ids], dim=1)

    def step() -> None:
        model(input_ids=longer, labels=labels).loss.backward()

    return step


def _train(ctx: Context, method: str) -> Result:
    ids = batch(build("llama", ctx), ctx)
    extra = (4 if ctx.quick else VIRTUAL_TOKENS) if method == "prompt" else 0
    variants = {"floor": _floor_with_extra_positions(build("llama", ctx), ids, extra)}
    for name in BACKENDS:
        backend = load_backend(name)
        variants[name] = training_step(wrap(backend, build("llama", ctx), _config(backend, method, ctx)), ids)
    return measure(variants, ctx, warmup=1, runs=7)


def prompt_step(ctx: Context) -> Result:
    """Prompt tuning training step on llama-tiny (8 x 128 tokens, 20 virtual tokens) vs the floor on 148 positions."""
    return _train(ctx, "prompt")


def prefix_step(ctx: Context) -> Result:
    """Prefix tuning training step on llama-tiny (8 x 128 tokens, a 20-token prefix in every layer)."""
    return _train(ctx, "prefix")


def generate_cache(ctx: Context) -> Result:
    """Greedy generate with the KV cache on llama-tiny: 4 prompts of 32 tokens, 32 new tokens; base,
    prompt tuning and prefix tuning (20 virtual tokens)."""
    rows, length, new = (2, 4, 4) if ctx.quick else (4, 32, 32)
    base = build("llama", ctx).eval()
    ids = batch(base, ctx, rows=rows, tokens=length)
    options = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "use_cache": True, "pad_token_id": 0}

    def generate(model: nn.Module) -> Callable[[], None]:
        model.eval()

        def run() -> None:
            with torch.no_grad():
                model.generate(input_ids=ids, **options)  # type: ignore[operator]

        return run

    variants = {"base": generate(base)}
    for method in ("prompt", "prefix"):
        for name in BACKENDS:
            backend = load_backend(name)
            variants[f"{name}_{method}"] = generate(wrap(backend, build("llama", ctx), _config(backend, method, ctx)))
    return measure(variants, ctx, warmup=1, runs=9)
