"""Training: the LoRA step against its floor (with and without dropout), and peak memory while training."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable

import torch

from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure, peak_rss_mb
from benchmarks.scenarios.common import batch, build, frozen_floor, lora_config, training_step, wrap

DROPOUT = 0.1


def _train(ctx: Context, model_name: str) -> Result:
    ids = batch(build(model_name, ctx), ctx)
    variants = {"floor": training_step(frozen_floor(build(model_name, ctx)), ids)}
    for name in BACKENDS:
        backend = load_backend(name)
        variants[name] = training_step(wrap(backend, build(model_name, ctx), lora_config(backend, ctx)), ids)
        dropout = lora_config(backend, ctx, lora_dropout=DROPOUT)
        variants[f"{name}_dropout"] = training_step(wrap(backend, build(model_name, ctx), dropout), ids)
        if name == "ours":  # the cheaper CPU mask (opt-in: it leaves the incumbent's random stream)
            fast = training_step(wrap(backend, build(model_name, ctx), dropout), ids)
            variants["ours_fast_dropout"] = functools.partial(_with_fast_dropout, fast)
    return measure(variants, ctx, warmup=1, runs=7)


def _with_fast_dropout(step: Callable[[], object]) -> None:
    from peft_lora import fast_dropout

    with fast_dropout():
        step()


def train_llama(ctx: Context) -> Result:
    """LoRA training step on llama-tiny (8 x 128 tokens) vs the frozen-base floor; and with lora_dropout 0.1."""
    return _train(ctx, "llama")


def train_gpt2(ctx: Context) -> Result:
    """LoRA training step on GPT-2 (Conv1D layers), 8 x 128 tokens; and with lora_dropout 0.1."""
    return _train(ctx, "gpt2")


RSS_VARIANTS = ("floor", *BACKENDS)


def peak_memory(ctx: Context) -> Result:
    """Peak memory of a process that builds llama-tiny and trains 3 steps (one process per variant)."""
    assert ctx.variant in RSS_VARIANTS, ctx.variant
    model = build("llama", ctx)
    ids = batch(model, ctx)
    if ctx.variant == "floor":
        model = frozen_floor(model)
    else:
        backend = load_backend(ctx.variant)
        model = wrap(backend, model, lora_config(backend, ctx))
    gc.collect()
    before = peak_rss_mb()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    step = training_step(model, ids)
    for _ in range(3):
        step()
    result = Result()
    result.values[f"{ctx.variant}_peak_rss_mb"] = peak_rss_mb()
    result.values[f"{ctx.variant}_training_rss_mb"] = peak_rss_mb() - before
    if ctx.device.type == "cuda":
        result.values[f"{ctx.variant}_peak_cuda_mb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    return result
