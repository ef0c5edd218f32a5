"""DDP across 2 gloo ranks: adapters stay identical, match one process, save once, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import training_cases as cases
from safetensors.torch import load_file

from peft_core import PeftModel, get_peft_model_state_dict

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("name", cases.DDP_CASES)
def test_adapters_are_identical_on_every_rank_and_equal_one_process(worker_results: Path, name: str) -> None:
    folder = worker_results / "ddp" / name
    rank0, rank1 = (load_file(folder / f"rank{r}.safetensors") for r in range(cases.WORLD_SIZE))
    reference = cases.reference_state(name)
    initial = cases.initial_state(name)
    assert set(rank0) == set(rank1) == set(reference) == set(initial)
    for key in reference:
        assert torch.equal(rank0[key], rank1[key]), key  # all-reduce hands every rank the same bits
        torch.testing.assert_close(rank0[key], reference[key], atol=cases.tolerance(name), rtol=0, msg=key)
        assert (rank0[key] - initial[key]).abs().max() > 1e-3, key  # trained: far above the tolerance


@pytest.mark.parametrize("name", cases.DDP_CASES)
def test_only_rank0_writes_and_the_adapter_loads_in_one_process(worker_results: Path, name: str) -> None:
    folder = worker_results / "ddp" / name
    assert not (folder / "saved-by-rank1").exists()
    rank0 = load_file(folder / "rank0.safetensors")

    loaded = PeftModel.from_pretrained(cases.fresh_base(name), folder / "saved-by-rank0")
    state = get_peft_model_state_dict(loaded)
    assert state.keys() == rank0.keys()
    for key, value in rank0.items():
        assert torch.equal(state[key], value), key
    batch = cases.global_batch(name, 0)
    expected = cases.logits(cases.reference(name), batch)
    torch.testing.assert_close(cases.logits(loaded, batch), expected, atol=1e-5, rtol=0)  # measured <= 9.1e-7


def test_an_inactive_trainable_adapter_is_refused_then_frozen(worker_results: Path) -> None:
    folder = worker_results / "ddp" / "two_adapters"
    facts = json.loads((folder / "rank0.json").read_text())
    assert "2 trainable parameters belong to adapters that are not active" in facts["wrap_error"]
    assert "freeze_unused_adapters" in facts["wrap_error"]
    assert facts["frozen"] == ["base_model.model.lin0.lora_A.other.weight", "base_model.model.lin0.lora_B.other.weight"]
    other = load_file(folder / "saved-by-rank0" / "other" / "adapter_model.safetensors")
    for key, value in cases.initial_state("two_adapters", "other").items():
        assert torch.equal(other[key], value), key  # frozen before wrapping: untouched by training
