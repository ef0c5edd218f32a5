"""Conversion of an adapter to LoRA (truncated SVD per layer): ours vs Hugging Face PEFT's ``convert_to_lora``."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from benchmarks.backends import load_backend
from benchmarks.context import Context, Result
from benchmarks.scenarios.common import build, lora_config, rank, wrap
from benchmarks.timing import summarize


def _converter(name: str) -> Any:
    if name == "ours":
        from peft_lora import convert_to_lora
    else:
        from peft.tuners.lora.conversion import convert_to_lora
    return convert_to_lora


def convert_to_lora(ctx: Context) -> Result:
    """A LoRA adapter (r=16, all linear layers of llama-tiny, random factors) converted to LoRA of rank 8:
    the update of every layer read, SVD'd and cut. The same adapter in both libraries."""
    base = build("llama", ctx)
    models = {}
    for name in ("ours", "hf"):
        backend = load_backend(name)
        models[name] = wrap(backend, copy.deepcopy(base), lora_config(backend, ctx, init_lora_weights=False))
    with torch.no_grad():  # the same factors in both
        ours = dict(models["ours"].named_parameters())
        for key, param in models["hf"].named_parameters():
            if "lora_" in key:
                param.copy_(ours[key])
    samples: dict[str, list[float]] = {name: [] for name in models}
    for run in range(ctx.runs(5) + 1):  # run 0 warms up
        for name, model in models.items():
            start = time.perf_counter()
            _converter(name)(model, rank=max(1, rank(ctx) // 2))
            if run:
                samples[name].append((time.perf_counter() - start) * 1000)
    result = Result()
    result.wall = {name: summarize(values) for name, values in samples.items()}
    return result
