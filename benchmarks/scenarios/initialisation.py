"""LoRA initialisation: what the incumbent's random stream costs at injection, and PiSSA/OLoRA init time."""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from benchmarks import models
from benchmarks.backends import load_backend
from benchmarks.context import Context, Result
from benchmarks.scenarios.common import build, lora_config, wrap
from benchmarks.timing import summarize, synchronize


def _fast_init() -> AbstractContextManager[None]:
    from peft_lora import fast_init

    return fast_init()


# variant -> (backend, context around get_peft_model)
INJECT_VARIANTS: dict[str, tuple[str, Callable[[], AbstractContextManager[None]]]] = {
    "ours": ("ours", nullcontext),  # the incumbent's random stream (default)
    "ours_fast_init": ("ours", _fast_init),
    "hf": ("hf", nullcontext),
}


def inject_init_large(ctx: Context) -> Result:
    """get_peft_model (LoRA r=16, all 112 linear layers, default init) on Llama 0.94B bf16: with the
    incumbent's random stream (A drawn twice, B once, on the CPU, rounded through bf16), with
    ``fast_init()`` (each factor drawn once), and Hugging Face PEFT. A fresh model per run."""
    samples: dict[str, list[float]] = {name: [] for name in INJECT_VARIANTS}
    for _ in range(ctx.runs(3)):
        for name, (backend_name, context) in INJECT_VARIANTS.items():
            backend = load_backend(backend_name)
            model = models.llama_large(ctx.quick).to(ctx.device)
            config = lora_config(backend, ctx)
            synchronize(ctx.device)
            start = time.perf_counter()
            with context():
                wrap(backend, model, config)
            synchronize(ctx.device)
            samples[name].append((time.perf_counter() - start) * 1000)
            del model
            gc.collect()
    result = Result()
    result.wall = {name: summarize(values) for name, values in samples.items()}
    return result


def pissa_init(ctx: Context) -> Result:
    """get_peft_model with init_lora_weights "pissa" (full SVD), "pissa_niter_4" and "olora" (QR) on
    llama-tiny (fp32, r=16, all linear layers): ours / HF per init. A fresh copy of the model per run."""
    base = build("llama", ctx)
    inits = ("pissa", "pissa_niter_4", "olora")
    samples: dict[str, list[float]] = {f"{b}_{i}": [] for i in inits for b in ("ours", "hf")}
    for run in range(ctx.runs(5) + 1):  # run 0 warms up
        for init in inits:
            for backend_name in ("ours", "hf"):
                backend = load_backend(backend_name)
                model = copy.deepcopy(base)
                config = lora_config(backend, ctx, init_lora_weights=init)
                start = time.perf_counter()
                wrap(backend, model, config)
                synchronize(ctx.device)
                if run:
                    samples[f"{backend_name}_{init}"].append((time.perf_counter() - start) * 1000)
    result = Result()
    result.wall = {name: summarize(values) for name, values in samples.items()}
    return result
