"""DeepSpeed ZeRO-3 specifics, 2 gloo ranks: partitioned adapters are saved whole or not at all.

Hugging Face PEFT's best-known ZeRO-3 failure (its issue #2500) is an adapter file of
0-element tensors: each rank's empty placeholders written as if they were the weights.
Here every save that would see placeholders raises and writes nothing, and the helper
(``peft_core.integrations.distributed.save_pretrained``) gathers the adapter with
``deepspeed.zero.GatheredParameters`` and writes it from rank 0 (the sweep in
test_methods_across_processes.py checks those files for every method).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import training_cases as cases
from deepspeed_runs import LOAD_CASE
from records import read_facts

pytestmark = pytest.mark.distributed
HELPER = "peft_core.integrations.distributed.save_pretrained(model, directory) on every rank"


@pytest.mark.parametrize("name", cases.METHOD_CASES)
def test_zero3_partitions_every_parameter_and_zero2_none(worker_results: Path, name: str) -> None:
    zero3, zero2 = read_facts(worker_results / "zero3" / name), read_facts(worker_results / "zero2" / name)
    assert zero3["partitioned"] == zero3["parameters"]  # adapters too: stage3_param_persistence_threshold 0
    assert zero2["partitioned"] == []


def test_every_save_that_would_see_zero3_placeholders_raises_and_writes_nothing(worker_results: Path) -> None:
    folder = worker_results / "zero3" / LOAD_CASE
    for rank in range(cases.WORLD_SIZE):
        facts = read_facts(folder, rank)
        assert set(map(tuple, facts["trainable_shapes"].values())) == {(0,)}  # what a rank holds between steps
        for key in ("state_dict_error", "plain_save_error"):  # get_peft_model_state_dict, model.save_pretrained
            assert "adapter 'default' is partitioned by DeepSpeed ZeRO-3 (8 tensors)" in facts[key]
            assert HELPER in facts[key]
        # save_pretrained(state_dict=model.state_dict()), a trainer's fallback when it cannot consolidate:
        assert facts["state_dict_save_error"].startswith("refusing to save 0-element tensors")
        assert HELPER in facts["state_dict_save_error"]
        assert not (folder / f"plain-save-rank{rank}").exists()
        assert not (folder / f"state-dict-save-rank{rank}").exists()


@pytest.mark.incumbent
def test_incumbent_writes_zero3_placeholders_as_an_adapter(worker_results: Path) -> None:
    folder = worker_results / "zero3" / "incumbent"
    for rank in range(cases.WORLD_SIZE):
        facts = read_facts(folder, rank)
        # A file on every rank, every tensor shaped (0,); a warning is all the user gets.
        assert (folder / f"saved-by-rank{rank}" / "adapter_model.safetensors").exists()
        assert len(facts["saved_shapes"]) == 4 and set(map(tuple, facts["saved_shapes"].values())) == {(0,)}
        assert any("invalid shape" in message for message in facts["warnings"])


def test_a_base_model_partitioned_by_zero_init_is_refused_and_left_alone(worker_results: Path) -> None:
    for rank in range(cases.WORLD_SIZE):
        facts = read_facts(worker_results / "zero3" / "zero_init", rank)
        assert facts["partitioned"] is True
        assert facts["error"].startswith(
            "cannot add adapter 'default': this model's parameters are already split across processes by "
            "DeepSpeed ZeRO-3 (7 of them, e.g. emb.weight)"
        )
        assert "build the base model outside deepspeed.zero.Init" in facts["error"]
        assert facts["untouched"] is True
