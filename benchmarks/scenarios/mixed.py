"""Per-row mixed-adapter batches: 1 to 64 adapters in one batch, against one active adapter and the base.

One model per backend holds 64 adapters (r=16, random non-zero weights); a batch with
``k`` adapters gives each of the first ``k`` an equal share of the rows, in a shuffled order.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

from benchmarks import models
from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import build, inference, lora_config, wrap

ADAPTERS = 64
MIXES = (1, 4, 16, 32, 64)


def row_names(rows: int, adapters: int, seed: int = 0) -> list[str]:
    names = [f"a{i % adapters}" for i in range(rows)]
    random.Random(seed).shuffle(names)
    return names


def _many_adapters(backend_name: str, model: nn.Module, ctx: Context, count: int) -> nn.Module:
    backend = load_backend(backend_name)
    targets = [str(i) for i in range(len(model))] if isinstance(model, nn.Sequential) else "all-linear"
    config = lora_config(backend, ctx, init_lora_weights=False, target_modules=targets)
    wrapped = wrap(backend, model, config, adapter_name="a0")
    for i in range(1, count):
        wrapped.add_adapter(f"a{i}", config)
    wrapped.set_adapter("a0")
    return wrapped


def _forward(model: nn.Module, inputs: torch.Tensor, names: list[str] | None) -> Callable[[], None]:
    kwargs = {} if names is None else {"adapter_names": names}
    if inputs.is_floating_point():  # the Linear stack takes hidden states, not token ids

        def run() -> None:
            with torch.no_grad():
                model(inputs, **kwargs)

        return run
    return inference(model, inputs, **kwargs)


def _mixed(ctx: Context, model_name: str, rows: int, tokens: int) -> Result:
    count, mixes = (8, (1, 4, 8)) if ctx.quick else (ADAPTERS, MIXES)
    base = build(model_name, ctx).eval()
    if model_name == "linear_stack":
        generator = torch.Generator().manual_seed(0)
        ids = torch.randn(rows, base[0].in_features, generator=generator).to(ctx.device)
    else:
        ids = models.token_batch(rows, tokens, int(base.config.vocab_size), ctx.device)
    rows = ids.shape[0]
    variants = {"base": _forward(base, ids, None)}
    for name in BACKENDS:
        model = _many_adapters(name, build(model_name, ctx), ctx, count).eval()
        variants[f"{name}_single"] = _forward(model, ids, None)
        for k in mixes:
            variants[f"{name}_mixed{k}"] = _forward(model, ids, row_names(rows, k))
    result = measure(variants, ctx, warmup=2, runs=7 if tokens > 1 else 20)
    result.notes.append(f"{rows} rows x {tokens} tokens, {count} adapters loaded, mixes {mixes}")
    return result


def mixed_decode(ctx: Context) -> Result:
    """llama-tiny, decode shape: 64 rows x 1 token."""
    return _mixed(ctx, "llama", 64, 1)


def mixed_prefill(ctx: Context) -> Result:
    """llama-tiny, prefill shape: 32 rows x 64 tokens."""
    return _mixed(ctx, "llama", 32, 64)


def mixed_linear_stack(ctx: Context) -> Result:
    """Eight Linear(1024), decode shape (64 rows): the incumbent's published mixed-batch case."""
    return _mixed(ctx, "linear_stack", 64, 1)
