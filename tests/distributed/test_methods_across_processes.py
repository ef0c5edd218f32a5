"""Every installed method on every engine, 2 gloo ranks: same adapter on both ranks and as one process.

Engines: DDP (``wrap_ddp``), DeepSpeed ZeRO-2 and ZeRO-3 through ``deepspeed.initialize``
(worker.py), and through ``accelerate launch`` with a DeepSpeed config, and FSDP2 through
``accelerate launch`` with an FSDP2 config (accelerate_worker.py). Each method case is an
entry of ``support.method_configs`` trained ``STEPS`` SGD steps on 2 rows per rank; the
reference is one process on the 4-row global batches. SGD's update is the averaged
gradient, so only the summation order differs: allowed ``SGD_TOLERANCE`` (1e-6),
measured at most 6e-8 (docs/distributed.md has the table). ZeRO-3 runs partition every parameter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import training_cases as cases
from launching import ACCELERATE_ENGINES, WORKER_ENGINES
from records import read_facts, read_tensors
from safetensors.torch import load_file

from peft_core import PeftModel, get_peft_model_state_dict
from support.method_configs import METHOD_CONFIGS

pytestmark = pytest.mark.distributed
ENGINES = (*WORKER_ENGINES, *ACCELERATE_ENGINES)


def _sweep() -> list[Any]:
    """(engine, case) for every engine and installed method; a listed known failure is a strict xfail."""
    params = []
    for engine in ENGINES:
        for name in cases.METHOD_CASES:
            reason = METHOD_CONFIGS[cases.method_name(name)].known_failures.get(engine)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(engine, name, marks=marks, id=f"{engine}-{name}"))
    return params


def _report(engine: str, name: str, largest: float) -> None:
    """With PEFT_SWEEP_REPORT=FILE: append the largest |distributed - one process| (for the docs table)."""
    path = os.environ.get("PEFT_SWEEP_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as report:
            report.write(json.dumps({"engine": engine, "case": name, "largest": largest}) + "\n")


@pytest.mark.parametrize(("engine", "name"), _sweep())
def test_adapters_are_equal_on_both_ranks_and_to_one_process(
    engine_results: Callable[[str], Path], engine: str, name: str
) -> None:
    folder = engine_results(engine) / name
    rank0, rank1 = read_tensors(folder, 0), read_tensors(folder, 1)
    reference = cases.reference_state(name)
    assert rank0.keys() == rank1.keys() == reference.keys()
    for key in reference:
        assert rank0[key].shape == reference[key].shape, key  # gathered whole, never a shard or a placeholder
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], reference[key], atol=cases.SGD_TOLERANCE, rtol=0, msg=key)
    _report(engine, name, max((rank0[k] - reference[k]).abs().amax().item() for k in reference if rank0[k].numel()))
    for rank in range(cases.WORLD_SIZE):
        assert read_facts(folder, rank)["frozen_max_change"] == 0.0  # base weights untouched, bit for bit


@pytest.mark.parametrize(("engine", "name"), _sweep())
def test_rank0_saves_a_whole_adapter_that_loads_in_one_process(
    engine_results: Callable[[str], Path], engine: str, name: str
) -> None:
    folder = engine_results(engine) / name
    gathered = read_tensors(folder, 0)
    # The helper everywhere; through accelerate also the Trainer's way (get_state_dict, then save_pretrained).
    reference = cases.reference_state(name)  # one process: the shapes a whole adapter has (pruned ranks too)
    routes = ["saved-by-rank"] + (["accelerate-saved-by-rank"] if engine in ACCELERATE_ENGINES else [])
    for route in routes:
        assert not (folder / f"{route}1").exists(), route
        saved = load_file(folder / f"{route}0" / "adapter_model.safetensors")
        assert saved.keys() == gathered.keys(), route
        for key, tensor in saved.items():
            assert tensor.shape == reference[key].shape and torch.equal(tensor, gathered[key]), (route, key)
    loaded = PeftModel.from_pretrained(cases.fresh_base(name), folder / "saved-by-rank0")
    assert all(torch.equal(v, gathered[k]) for k, v in get_peft_model_state_dict(loaded).items())
    expected = cases.reference_logits(name)
    torch.testing.assert_close(cases.logits(loaded, cases.global_batch(name, 0)), expected, atol=1e-5, rtol=0)
