"""AdaLoRA: a training step with its rank allocation, against Hugging Face PEFT.

llama-tiny, AdaLoRA ``init_r=12`` -> ``target_r=8`` on every linear layer but the head
(28 modules), 8 x 128 tokens (8 x 32 in ``adalora_step_short``). A step is forward
(causal-LM loss plus the orthogonality regulariser; ``task_type="CAUSAL_LM"`` so that
the incumbent adds it too), backward, AdamW, ``update_and_allocate(step)`` and
``zero_grad``. The schedule keeps every timed step in the budget phase and prunes at each
one (``deltaT=1``): the most work an allocation step does. ``floor`` is the frozen base
with gradients flowing through it; ``*_allocate`` times ``update_and_allocate`` alone
(gradients kept).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import batch, build, frozen_floor, training_step

SCHEDULE = {"init_r": 12, "target_r": 8, "tinit": 0, "tfinal": 0, "deltaT": 1, "total_step": 100_000}


def _adalora(backend: str, model: nn.Module) -> nn.Module:
    settings: dict[str, Any] = SCHEDULE | {"lora_alpha": 32, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "ours":
            import peft_core
            from peft_adalora import AdaLoraConfig

            return peft_core.get_peft_model(model, AdaLoraConfig(**settings))
        import peft

        wrapped: nn.Module = peft.get_peft_model(model, peft.AdaLoraConfig(**settings))
        return wrapped


class _Loop:
    """A plain AdaLoRA loop; ``step`` counts on across calls (the schedule needs increasing steps)."""

    def __init__(self, model: nn.Module, ids: torch.Tensor) -> None:
        self.model, self.ids, self.step = model, ids, 1
        model.train()
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.allocate: Callable[[int], None] = model.base_model.update_and_allocate

    def train_step(self) -> None:
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.allocate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def allocation_only(self) -> None:
        self.allocate(self.step)
        self.step += 1


def _step(ctx: Context, tokens: int) -> Result:
    ids = batch(build("llama", ctx), ctx, tokens=tokens)
    loops = {name: _Loop(_adalora(name, build("llama", ctx)), ids) for name in ("ours", "hf")}
    variants = {"floor": training_step(frozen_floor(build("llama", ctx)), ids)}
    variants |= {name: loop.train_step for name, loop in loops.items()}
    result = measure(variants, ctx, warmup=1, runs=7)
    for loop in loops.values():  # gradients for the allocation-only timing
        loop.model(input_ids=ids, labels=ids).loss.backward()
    allocation = {f"{name}_allocate": loop.allocation_only for name, loop in loops.items()}
    return measure(allocation, ctx, warmup=2, runs=30, result=result)


def adalora_step(ctx: Context) -> Result:
    """AdaLoRA training step including the allocation step (8 x 128 tokens), ours vs Hugging Face PEFT."""
    return _step(ctx, tokens=128)


def adalora_step_short(ctx: Context) -> Result:
    """The same with short sequences (8 x 32 tokens, GLUE-like): fixed per-step costs weigh more."""
    return _step(ctx, tokens=32)
