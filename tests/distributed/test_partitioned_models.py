"""Models whose parameters ZeRO-3 has partitioned, in one process: what is refused, with which advice.

A ZeRO-3 partition is imitated the way DeepSpeed leaves it between forward passes: the
parameter carries ``ds_id`` and ``ds_numel`` (its real size) and its data is an empty
placeholder. The real thing, across 2 processes, is in test_deepspeed.py and
test_sharded_loading.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from peft_core import (
    AdapterLoadError,
    AdapterSaveError,
    PeftError,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft_core.engine.partitioning import is_partitioned_now, split_by
from peft_core.integrations.distributed import load_adapter_weights
from peft_lora import LoraConfig
from support.models import MLP

CONFIG = LoraConfig(r=2, target_modules=["lin0", "lin1"], init_lora_weights=False)


def _partition(param: nn.Parameter) -> torch.Tensor:
    """Make ``param`` look like a ZeRO-3 partition; returns its full value."""
    full = param.data
    param.ds_id = id(param)  # type: ignore[attr-defined]
    param.ds_numel = full.numel()  # type: ignore[attr-defined]
    param.data = torch.empty(0, dtype=full.dtype)
    return full


def _gather(param: nn.Parameter, full: torch.Tensor) -> None:
    param.data = full


def test_adding_an_adapter_to_a_partitioned_base_is_refused_and_changes_nothing() -> None:
    base = MLP()
    for param in base.parameters():
        _partition(param)
    modules_before = [name for name, _ in base.named_modules()]
    with pytest.raises(PeftError, match=r"cannot add adapter 'default': .* by DeepSpeed ZeRO-3 \(7 of them, e\.g\. "):
        get_peft_model(base, CONFIG)
    assert [name for name, _ in base.named_modules()] == modules_before
    assert split_by(base.lin0.weight) == "DeepSpeed ZeRO-3" and is_partitioned_now(base.lin0.weight)
    assert split_by(MLP().lin0.weight) is None


def test_saving_a_partitioned_adapter_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    model = get_peft_model(MLP(), CONFIG)
    _partition(model.base_model.model.lin0.lora_A["default"].weight)
    for attempt in (lambda: model.save_pretrained(tmp_path / "out"), lambda: get_peft_model_state_dict(model)):
        with pytest.raises(AdapterSaveError, match=r"ZeRO-3 \(1 tensors\).*distributed\.save_pretrained"):
            attempt()
    assert not (tmp_path / "out").exists()


def test_loading_into_a_partitioned_adapter_names_the_helper_and_works_once_gathered() -> None:
    source = get_peft_model(MLP(), CONFIG)
    state = {k: v.clone() for k, v in get_peft_model_state_dict(source).items()}
    model = get_peft_model(MLP(), CONFIG)
    weight = model.base_model.model.lin1.lora_B["default"].weight
    full = _partition(weight)
    with pytest.raises(AdapterLoadError, match=r"load_adapter_weights\(model, directory\) on every rank"):
        set_peft_model_state_dict(model, state)
    assert weight.numel() == 0  # nothing copied
    _gather(weight, full)  # what GatheredParameters does: the whole value, still a ZeRO-3 parameter
    assert not is_partitioned_now(weight)
    set_peft_model_state_dict(model, state)
    assert torch.equal(weight, state["base_model.model.lin1.lora_B.weight"])


def test_the_load_helper_wants_the_engine_for_zero3_adapters(tmp_path: Path) -> None:
    get_peft_model(MLP(), CONFIG).save_pretrained(tmp_path)
    model = get_peft_model(MLP(), CONFIG)
    _partition(model.base_model.model.lin0.lora_A["default"].weight)
    with pytest.raises(PeftError, match="master weights would overwrite the change.*Pass the DeepSpeedEngine"):
        load_adapter_weights(model, tmp_path)
    with pytest.raises(PeftError, match="has no adapter 'other'.*add adapters before sharding"):
        load_adapter_weights(model, tmp_path, "other")
