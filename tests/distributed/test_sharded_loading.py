"""Loading a saved adapter into a model that ZeRO-2, ZeRO-3 or FSDP2 already holds, 2 gloo ranks.

The source is the ``method_lora`` adapter that the DDP run saved. Each run builds the
case afresh (its adapter at the initial values), lets the engine take it over
(``deepspeed.initialize``, ``shard_model``), calls ``load_adapter_weights`` on every rank
and then trains one more step. That step must equal one process that loaded the same
folder and took the same step: with ZeRO the optimizer's fp32 master weights are
refreshed from the loaded values, or the step would start from the initial ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import training_cases as cases
from deepspeed_runs import LOAD_CASE
from records import read_facts, read_tensors
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed
LOADED_INTO = ("zero2", "zero3", "fsdp")


def _source(worker_results: Path) -> Path:
    return worker_results / "ddp" / LOAD_CASE / "saved-by-rank0"


@pytest.mark.parametrize("engine", LOADED_INTO)
def test_a_saved_adapter_loads_into_the_sharded_model_and_training_goes_on_from_it(
    worker_results: Path, engine: str
) -> None:
    folder = worker_results / engine / "loading"
    saved = load_file(_source(worker_results) / "adapter_model.safetensors")
    initial = cases.initial_state(LOAD_CASE)
    steps = range(cases.STEPS, cases.STEPS + 1)
    reference = cases.reference_after_loading(LOAD_CASE, _source(worker_results), steps)
    for rank in range(cases.WORLD_SIZE):
        loaded = read_tensors(folder, rank, name="loaded-rank")
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[k], saved[k]) for k in saved)  # exactly the file, on every rank
        assert max((saved[k] - initial[k]).abs().max().item() for k in saved) > 0.01  # not what was there
        after = read_tensors(folder, rank)
        for key in reference:
            torch.testing.assert_close(after[key], reference[key], atol=cases.SGD_TOLERANCE, rtol=0, msg=key)
        assert max((after[k] - saved[k]).abs().max().item() for k in saved) > 1e-3  # the step moved it


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])  # ZeRO-2 keeps whole parameters: nothing marks them
def test_adding_a_new_adapter_to_the_sharded_model_is_one_clear_error(worker_results: Path, engine: str) -> None:
    error = read_facts(worker_results / engine / "loading")["add_adapter_error"]
    kind = {"zero3": "DeepSpeed ZeRO-3", "fsdp": "FSDP2"}[engine]
    assert f"cannot add adapter 'second': this model's parameters are already split across processes by {kind}" in (
        error
    )
    assert "PeftModel.from_pretrained(base, directory, is_trainable=True)" in error
    assert "peft_core.integrations.distributed.load_adapter_weights(model, directory) on every rank" in error


def test_zero3_loads_go_through_the_helper_with_the_engine(worker_results: Path) -> None:
    facts = read_facts(worker_results / "zero3" / "loading")
    assert facts["plain_load"].startswith("adapter 'default' is partitioned by DeepSpeed ZeRO-3 (8 tensors)")
    assert "load_adapter_weights(model, directory) on every rank with the DeepSpeed engine" in facts["plain_load"]
    assert "optimizer's fp32 master weights would overwrite the change" in facts["module_load"]
    assert "Pass the DeepSpeedEngine" in facts["module_load"]
