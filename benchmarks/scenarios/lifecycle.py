"""Adapter life cycle: injection and merge_and_unload on a ~0.9B Llama; save and load."""

from __future__ import annotations

import copy
import gc
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import models
from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result
from benchmarks.scenarios.common import build, lora_config, wrap
from benchmarks.timing import summarize, synchronize


def inject_merge_large(ctx: Context) -> Result:
    """get_peft_model (LoRA r=16 on all 112 linear layers) and merge_and_unload on Llama 0.94B, bf16.

    The model is built on the meta device and materialised with ``to_empty`` (no init),
    fresh for every run; the backends alternate run by run.
    """
    samples: dict[str, list[float]] = {f"{n}_{what}": [] for n in BACKENDS for what in ("inject", "merge_and_unload")}
    result = Result()
    for _ in range(ctx.runs(3)):
        for name in BACKENDS:
            backend = load_backend(name)
            model = models.llama_large(ctx.quick).to(ctx.device)
            result.values["large_model_parameters"] = models.parameter_count(model)
            config = lora_config(backend, ctx)
            synchronize(ctx.device)
            start = time.perf_counter()
            wrapped = wrap(backend, model, config)
            synchronize(ctx.device)
            samples[f"{name}_inject"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            wrapped.merge_and_unload()
            synchronize(ctx.device)
            samples[f"{name}_merge_and_unload"].append((time.perf_counter() - start) * 1000)
            del model, wrapped
            gc.collect()
    result.wall = {key: summarize(values) for key, values in samples.items()}
    return result


def save_load(ctx: Context) -> Result:
    """save_pretrained and PeftModel.from_pretrained of a llama-tiny LoRA adapter (r=16, all linear)."""
    base = build("llama", ctx)
    samples: dict[str, list[float]] = {f"{n}_{what}": [] for n in BACKENDS for what in ("save", "load")}
    result = Result()
    root = Path(tempfile.mkdtemp(prefix="peft-bench-"))
    try:
        trained = {}
        for name in BACKENDS:
            backend = load_backend(name)
            trained[name] = wrap(backend, copy.deepcopy(base), lora_config(backend, ctx, init_lora_weights=False))
        for run in range(ctx.runs(10) + 1):  # run 0 warms up
            for name in BACKENDS:
                backend = load_backend(name)
                target = root / f"{name}-{run}"
                fresh = copy.deepcopy(base)
                start = time.perf_counter()
                trained[name].save_pretrained(target)
                saved = time.perf_counter()
                backend.peft_model_class.from_pretrained(fresh, target)
                loaded = time.perf_counter()
                if run:
                    samples[f"{name}_save"].append((saved - start) * 1000)
                    samples[f"{name}_load"].append((loaded - saved) * 1000)
                result.values[f"{name}_file_bytes"] = (target / "adapter_model.safetensors").stat().st_size
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result.wall = {key: summarize(values) for key, values in samples.items()}
    return result
