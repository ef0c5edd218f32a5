"""LoRA variants and bases: DoRA (peft-dora) and QLoRA (peft-bnb) against Hugging Face PEFT."""

from __future__ import annotations

from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import batch, build, frozen_floor, inference, lora_config, training_step, wrap


def dora_train(ctx: Context) -> Result:
    """DoRA training step on llama-tiny (r=16 on every linear layer, 8 x 128 tokens) vs the floor."""
    ids = batch(build("llama", ctx), ctx)
    variants = {"floor": training_step(frozen_floor(build("llama", ctx)), ids)}
    for name in BACKENDS:
        backend = load_backend(name)
        config = lora_config(backend, ctx, use_dora=True)
        variants[name] = training_step(wrap(backend, build("llama", ctx), config), ids)
    return measure(variants, ctx, warmup=1, runs=7)


def dora_forward(ctx: Context) -> Result:
    """DoRA unmerged forward of llama-tiny (8 x 128 tokens, no grad) against the base model."""
    base = build("llama", ctx)
    ids = batch(base, ctx)
    variants = {"base": inference(base, ids)}
    for name in BACKENDS:
        backend = load_backend(name)
        config = lora_config(backend, ctx, use_dora=True, init_lora_weights=False)  # a non-zero update
        variants[f"{name}_unmerged"] = inference(wrap(backend, build("llama", ctx), config), ids)
    return measure(variants, ctx, warmup=2, runs=15)
