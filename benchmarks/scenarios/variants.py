"""LoRA variants and bases: DoRA (peft-dora) and QLoRA (peft-bnb) against Hugging Face PEFT."""

from __future__ import annotations

import tempfile
import warnings

import torch
from torch import nn

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


def _nf4(ctx: Context, folder: str) -> nn.Module:
    """llama-tiny loaded from ``folder`` with its linear layers in 4-bit NF4 (double quantization)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if ctx.device.type == "cuda" else torch.float32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: nn.Module = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization, device_map=str(ctx.device)
        )
    return model


def qlora_train(ctx: Context) -> Result:
    """QLoRA training step: LoRA r=16 on every linear layer of llama-tiny in NF4 (bitsandbytes), vs the floor."""
    with tempfile.TemporaryDirectory(prefix="peft-bench-nf4-") as folder:
        build("llama", ctx).save_pretrained(folder)
        ids = batch(_nf4(ctx, folder), ctx)
        variants = {"floor": training_step(frozen_floor(_nf4(ctx, folder)), ids)}
        for name in BACKENDS:
            backend = load_backend(name)
            variants[name] = training_step(wrap(backend, _nf4(ctx, folder), lora_config(backend, ctx)), ids)
        return measure(variants, ctx, warmup=1, runs=7)
