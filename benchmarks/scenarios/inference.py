"""Inference: the adapter unmerged and merged, each against the base model alone."""

from __future__ import annotations

from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import batch, build, inference, lora_config, wrap


def _forward(ctx: Context, model_name: str) -> Result:
    base = build(model_name, ctx)
    ids = batch(base, ctx)
    # A second, identical base instance: how much two copies of one model differ in speed
    # (memory placement) is the noise floor of the merged-vs-base ratio.
    variants = {"base": inference(base, ids), "base_copy": inference(build(model_name, ctx), ids)}
    for name in BACKENDS:
        backend = load_backend(name)
        config = lora_config(backend, ctx, init_lora_weights=False)  # a non-zero update, as after training
        variants[f"{name}_unmerged"] = inference(wrap(backend, build(model_name, ctx), config), ids)
        merged = wrap(backend, build(model_name, ctx), config)
        merged.merge_adapter()
        variants[f"{name}_merged"] = inference(merged, ids)
    return measure(variants, ctx, warmup=2, runs=15)


def forward_llama(ctx: Context) -> Result:
    """Forward of llama-tiny (8 x 128 tokens, no grad): base, unmerged LoRA, merged LoRA."""
    return _forward(ctx, "llama")


def forward_gpt2(ctx: Context) -> Result:
    """Forward of GPT-2 with Conv1D layers (8 x 128 tokens, no grad)."""
    return _forward(ctx, "gpt2")
