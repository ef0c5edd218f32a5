"""Every method of ``benchmarks.methods.METHODS``: a training step and an unmerged forward, ours vs HF.

Variants: ``floor`` (the frozen base, gradients flowing) and ``base`` (the plain forward)
as the references, ``ours_step``/``hf_step`` and ``ours_forward``/``hf_forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.methods import METHODS, MethodCase
from benchmarks.scenarios.common import batch, build, frozen_floor, inference, training_step, wrap


def method_config(case: MethodCase, backend: str) -> Any:
    """The config object of ``case`` in ``backend``'s library (same class name in both)."""
    library: Any = load_backend(backend).module
    return getattr(library, case.config)(**case.settings(backend))


def method_scenario(case: MethodCase) -> Callable[[Context], Result]:
    """The scenario function of one method (its docstring becomes the row group's description)."""

    def run(ctx: Context) -> Result:
        ids = batch(build(case.model, ctx), ctx)
        variants = {
            "floor": training_step(frozen_floor(build(case.model, ctx)), ids),
            "base": inference(build(case.model, ctx), ids),
        }
        for name in BACKENDS:
            backend = load_backend(name)
            variants[f"{name}_step"] = training_step(
                wrap(backend, build(case.model, ctx), method_config(case, name)), ids
            )
            variants[f"{name}_forward"] = inference(
                wrap(backend, build(case.model, ctx), method_config(case, name)), ids
            )
        result = measure(variants, ctx, warmup=1, runs=7)
        result.notes.append(f"{case.config}({', '.join(f'{k}={v!r}' for k, v in case.kwargs.items())})")
        return result

    run.__doc__ = (
        f"{case.title}: training step (8 x 128 tokens) against the frozen-base floor and unmerged "
        f"forward against the base, {case.model}-tiny."
    )
    run.__name__ = f"method_{case.name}"
    return run


SCENARIOS = {f"method_{case.name}": method_scenario(case) for case in METHODS}
