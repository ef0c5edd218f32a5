"""The per-method test configs cover every installed tuner, and each trains in one process as the sweeps need."""

from __future__ import annotations

import pytest
import torch
import training_cases as cases

from support.method_configs import METHOD_CONFIGS, installed_peft_types, uncovered_peft_types


def test_every_installed_method_has_a_test_config() -> None:
    assert uncovered_peft_types() == [], (
        f"installed tuners without an entry in tests/support/method_configs.py: {uncovered_peft_types()}; add one "
        "(peft_type, model, config fields) so that the distributed sweeps (DDP, DeepSpeed, FSDP2) train it"
    )
    assert {"LORA", "IA3"} <= set(installed_peft_types())
    assert {METHOD_CONFIGS[cases.method_name(n)].peft_type for n in cases.METHOD_CASES} == set(installed_peft_types())
    assert "method_dora" in cases.METHOD_CASES  # variant plugins of the repository run too


@pytest.mark.parametrize("name", cases.METHOD_CASES)
def test_every_adapter_tensor_moves_far_beyond_the_sweep_tolerance(name: str) -> None:
    # The sweeps compare each tensor with this run at SGD_TOLERANCE: a tensor that barely moves would
    # pass whatever the engine did to it.
    trained, initial = cases.reference_state(name), cases.initial_state(name)
    slow = METHOD_CONFIGS[cases.method_name(name)].slow_tensors
    assert trained.keys() == initial.keys() and trained
    for key in trained:
        if trained[key].shape != initial[key].shape:
            continue  # pruned (AdaLoRA's saved form): the sweeps compare shapes before values
        if key.endswith(tuple(slow)):
            continue
        moved = (trained[key] - initial[key]).abs().max().item()
        assert moved > 100 * cases.SGD_TOLERANCE, f"{key} moved {moved:.2e}: give the entry a livelier config"
    assert all(torch.isfinite(t).all() for t in trained.values())
    assert any(trained[k].shape == initial[k].shape and not k.endswith(tuple(slow)) for k in trained), "nothing checked"
