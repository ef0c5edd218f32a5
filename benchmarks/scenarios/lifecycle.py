"""Adapter life cycle at two sizes (and GPT-2's Conv1D layers) and two dtypes: inject,
merge/unmerge, save, hotswap, merge_and_unload and load, ours against the incumbent.

LoRA r=16 on every linear layer but the head, with weights as after training
(``_trained_like``). ``tiny`` is llama-tiny: both libraries in one process, round by round
(a copy of the base model per round, outside the timings); ``gpt2`` likewise, with
transformers' Conv1D layers. ``large`` is the 0.94B Llama built on the meta device and
materialised without init, fresh for every run; each library runs in a process of its own
(two copies of the model would not fit beside each other on small machines, and peak
memory is per process). Peak memory of ``merge_and_unload`` is what the call adds to the
resident set: the kernel's high-water mark is reset just before it (Linux).
"""

from __future__ import annotations

import copy
import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import models
from benchmarks.backends import BACKENDS, Backend, load_backend
from benchmarks.context import Context, Result, peak_added_mb
from benchmarks.scenarios.common import lora_config, wrap
from benchmarks.timing import summarize, synchronize

SIZES = {"tiny": "llama-tiny", "gpt2": "GPT-2 Conv1D", "large": "0.9B Llama"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OPERATIONS = ("inject", "merge_adapter", "unmerge_adapter", "save", "hotswap", "merge_and_unload", "load")


def _base(size: str, dtype: torch.dtype, ctx: Context) -> nn.Module:
    if size == "large":
        return models.llama_large(ctx.quick, dtype).to(ctx.device)
    if size == "gpt2":
        return models.gpt2(ctx.quick).to(dtype).to(ctx.device)
    return models.llama(ctx.quick).to(dtype).to(ctx.device)


class _Timer:
    """Wall-clock and process CPU-time samples (ms) by ``<backend>_<operation>``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.recording = True

    def __call__(self, key: str, fn: Callable[[], Any]) -> Any:
        synchronize(self.ctx.device)
        start_cpu, start = time.process_time(), time.perf_counter()
        value = fn()
        synchronize(self.ctx.device)
        if self.recording:
            self.wall.setdefault(key, []).append((time.perf_counter() - start) * 1000)
            self.cpu.setdefault(key, []).append((time.process_time() - start_cpu) * 1000)
        return value


def _cycle(backend: Backend, base: nn.Module, fresh: nn.Module, folder: Path, timer: _Timer, result: Result) -> None:
    """One run of every operation; ``base`` is consumed (wrapped, then merged and unloaded)."""
    name = backend.name
    config = lora_config(backend, timer.ctx)
    wrapped = timer(f"{name}_inject", lambda: wrap(backend, base, config))
    _trained_like(wrapped)
    timer(f"{name}_merge_adapter", wrapped.merge_adapter)
    timer(f"{name}_unmerge_adapter", wrapped.unmerge_adapter)
    timer(f"{name}_save", lambda: wrapped.save_pretrained(folder))
    result.values[f"{name}_file_bytes"] = (folder / "adapter_model.safetensors").stat().st_size
    timer(f"{name}_hotswap", lambda: backend.hotswap_adapter(wrapped, str(folder), "default"))
    with peak_added_mb() as peak:
        timer(f"{name}_merge_and_unload", wrapped.merge_and_unload)
    if peak.mb is not None and timer.recording:
        key = f"{name}_merge_and_unload_peak_mb"
        result.values[key] = max(result.values.get(key, 0.0), peak.mb)
    timer(f"{name}_load", lambda: backend.peft_model_class.from_pretrained(fresh, str(folder)))


def _trained_like(model: nn.Module) -> None:
    """LoRA as after some training: ``A`` as initialised, ``B`` (zero at init) ~ N(0, 0.02^2).

    The update is then a fraction of the weights, as a real one: the cost of an exact
    (reversible) merge depends on how many elements the merge rounds, which a random
    full-size update would overstate.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _warm_up(backend: Backend, ctx: Context) -> None:
    """Import and plugin discovery happen once per process: not part of any timing."""
    wrap(backend, models.llama(quick=True), lora_config(backend, ctx)).merge_and_unload()


def lifecycle(size: str, dtype_name: str) -> Callable[[Context], Result]:
    """The scenario for one size and dtype."""
    dtype = DTYPES[dtype_name]

    def run(ctx: Context) -> Result:
        result, timer = Result(), _Timer(ctx)
        root = Path(tempfile.mkdtemp(prefix="peft-bench-"))
        try:
            if size == "large":
                assert ctx.variant in BACKENDS, ctx.variant
                backend = load_backend(ctx.variant)
                _warm_up(backend, ctx)
                for run_index in range(ctx.runs(3)):
                    model = _base(size, dtype, ctx)
                    result.values["parameters"] = models.parameter_count(model)
                    # The merged, unloaded model is a base again: load onto it (same shapes, no copy).
                    _cycle(backend, model, model, root / f"{backend.name}-{run_index}", timer, result)
                    del model
                    gc.collect()
            else:
                base = _base(size, dtype, ctx)
                result.values["parameters"] = models.parameter_count(base)
                backends = [load_backend(name) for name in BACKENDS]
                for backend in backends:
                    _warm_up(backend, ctx)
                for run_index in range(ctx.runs(10) + 1):  # run 0 warms up
                    timer.recording = run_index > 0
                    for backend in backends:
                        copies = copy.deepcopy(base), copy.deepcopy(base)
                        _cycle(backend, *copies, root / f"{backend.name}-{run_index}", timer, result)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        result.wall = {key: summarize(values) for key, values in timer.wall.items()}
        if ctx.device.type == "cpu":
            result.cpu = {key: summarize(values) for key, values in timer.cpu.items()}
        return result

    run.__doc__ = (
        f"{SIZES[size]}, {dtype_name}: get_peft_model, merge_adapter, unmerge_adapter, save_pretrained, "
        "hotswap_adapter, merge_and_unload (and the peak memory it adds), from_pretrained."
    )
    run.__name__ = f"lifecycle_{size}_{dtype_name}"
    return run


SCENARIOS = {
    f"lifecycle_{size}_{dtype}": (lifecycle(size, dtype), size == "large") for size in SIZES for dtype in DTYPES
}
