"""Strict loading: the checkpoint is checked against model and config before the model is touched.

Also proven in tests/core/test_checkpoint.py: broken directories (no config, bad JSON,
unknown peft_type, invalid values), unreadable weights, legacy .bin without pickle.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules import module as torch_module

from peft_core import AdapterLoadError, PeftModel
from reliability.common import Snapshot, X, incumbent, lora_mlp
from support.models import MLP

A0 = "base_model.model.lin0.lora_A.weight"
B0 = "base_model.model.lin0.lora_B.weight"

# (change to the saved tensors, the line the error must contain)
MISFITS: list[tuple[Callable[[dict[str, torch.Tensor]], object], str]] = [
    (lambda t: t.pop(B0), f"1 missing:\n    {B0}"),
    (lambda t: t.update({"base_model.model.head.lora_A.weight": torch.ones(4, 16)}), "1 unexpected:\n    "),
    (
        lambda t: t.update({A0: torch.ones(8, 16)}),
        f"{A0}: rank 8 in checkpoint vs 4 in config: checkpoint ((8, 16), float32) vs model ((4, 16), float32)",
    ),
    (
        lambda t: t.update({A0: torch.ones(4, 17)}),
        f"{A0}: shape differs: checkpoint ((4, 17), float32) vs model ((4, 16), float32)",
    ),
    (lambda t: t.update({A0: torch.ones(4, 16, dtype=torch.int64)}), "dtype cannot be loaded into the model's"),
    (lambda t: t.update({A0: torch.ones(4, 16, dtype=torch.bool)}), "((4, 16), bool) vs model ((4, 16), float32)"),
    (lambda t: t.update({A0: torch.ones(0)}), f"{A0}: empty (0-element) tensor: saved from sharded (ZeRO-3/FSDP)"),
    (lambda t: t[A0].__setitem__((0, 0), float("nan")), f"{A0}: 1 non-finite values (NaN/inf)"),
    (lambda t: t.update({A0: torch.full((4, 16), 1e300, dtype=torch.float64)}), "values beyond the range of float32"),
]


@contextmanager
def no_change_to(model: nn.Module) -> Iterator[None]:
    """Fail if a submodule or parameter of ``model`` is (re)assigned inside the block."""
    own = {id(m) for m in model.modules()}
    touched: list[str] = []

    def record(module: nn.Module, name: str, value: object) -> None:
        if id(module) in own:
            touched.append(f"{type(module).__name__}.{name}")

    handles = [
        torch_module.register_module_module_registration_hook(record),
        torch_module.register_module_parameter_registration_hook(record),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    assert not touched, f"the model was modified: {touched}"


def _saved(tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], object] | None = None) -> nn.Module:
    base, model = lora_mlp()
    model.save_pretrained(tmp_path)
    if change is not None:
        tensors = load_file(tmp_path / "adapter_model.safetensors")
        change(tensors)
        save_file(tensors, tmp_path / "adapter_model.safetensors")
    return base


@pytest.mark.parametrize(("change", "line"), MISFITS)
def test_a_misfit_is_one_error_with_the_precise_diff_and_the_model_is_never_touched(
    tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], object], line: str
) -> None:
    target = copy.deepcopy(_saved(tmp_path, change))
    before = Snapshot.of(target, X)
    with no_change_to(target), pytest.raises(AdapterLoadError) as info:
        PeftModel.from_pretrained(target, tmp_path)
    message = str(info.value)
    assert message.startswith("checkpoint does not fit adapter 'default'; nothing was loaded:\n")
    assert line in message
    before.assert_same(Snapshot.of(target, X))


def test_a_rank_in_the_config_that_differs_from_the_weights_reads_as_a_rank_mismatch(tmp_path: Path) -> None:
    base = _saved(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"rank_pattern": {"lin1": 2}}))
    with pytest.raises(AdapterLoadError) as info:
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert "base_model.model.lin1.lora_A.weight: rank 4 in checkpoint vs 2 in config" in str(info.value)
    assert "base_model.model.lin1.lora_B.weight: rank 4 in checkpoint vs 2 in config" in str(info.value)


def test_load_adapter_failure_leaves_the_peft_model_and_its_other_adapters_untouched(tmp_path: Path) -> None:
    base = _saved(tmp_path, lambda t: t.update({A0: torch.ones(2, 16)}))
    _, model = lora_mlp(r=2, target_modules=["lin0"])
    model.add_adapter("other", model.peft_config["default"].model_copy(update={"inference_mode": True}))
    model.set_adapter(["default"])
    before = Snapshot.of(model, X)
    with no_change_to(model), pytest.raises(AdapterLoadError, match="rank 2 in checkpoint vs 4 in config"):
        model.load_adapter(tmp_path, "third", is_trainable=True)
    before.assert_same(Snapshot.of(model, X))
    assert list(model.peft_config) == ["default", "other"] and model.active_adapters == ["default"]
    assert base is not None


def test_non_strict_reports_the_same_diff_as_a_warning_but_never_loads_a_misfit(tmp_path: Path) -> None:
    base = _saved(tmp_path, lambda t: (t.pop(B0), t.update({"base_model.model.extra.weight": torch.ones(1)})))
    with pytest.raises(AdapterLoadError) as strict:
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    diff = str(strict.value).split("nothing was loaded:\n")[1].split("\nCheck that")[0]
    with pytest.warns(UserWarning, match="non-strictly") as record:
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, strict=False)
    assert [str(w.message).split("skipped:\n")[1] for w in record if "non-strictly" in str(w.message)] == [diff]
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert torch.equal(loaded.base_model.model.lin0.lora_A["default"].weight, saved[A0])  # the rest is loaded

    _saved(tmp_path, lambda t: t.update({A0: torch.ones(8, 16)}))
    with pytest.raises(AdapterLoadError, match="rank 8 in checkpoint vs 4 in config"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, strict=False)


def test_a_huge_rank_in_the_config_allocates_nothing(tmp_path: Path) -> None:
    base = _saved(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"r": 10**12}))
    with pytest.raises(AdapterLoadError, match=f"rank 4 in checkpoint vs {10**12} in config"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)  # 10**12 * 16 floats would not fit anywhere


@pytest.mark.incumbent
def test_incumbent_loads_weights_for_other_modules_with_only_a_warning(tmp_path: Path) -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    save_file({k.replace("lin0", "lin1"): v for k, v in tensors.items()}, tmp_path / "adapter_model.safetensors")
    with pytest.warns(UserWarning, match="missing adapter keys"):
        loaded = peft.PeftModel.from_pretrained(MLP(), tmp_path)
    saved_b = tensors["base_model.model.lin0.lora_B.weight"]
    assert not torch.equal(loaded.base_model.model.lin0.lora_B["default"].weight, saved_b)  # a random adapter


@pytest.mark.incumbent
def test_incumbent_shape_mismatch_is_a_raw_torch_error_after_changing_the_model(tmp_path: Path) -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0", "lin1"], r=4))
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors["base_model.model.lin0.lora_A.weight"] = torch.full((4, 16), 7.0)
    tensors["base_model.model.lin1.lora_A.weight"] = torch.ones(8, 16)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    target = MLP()
    with pytest.raises(RuntimeError, match="size mismatch"):
        peft.PeftModel.from_pretrained(target, tmp_path)
    assert type(target.lin0).__name__ == "Linear" and type(target.lin0) is not nn.Linear  # left wrapped
    assert torch.equal(target.lin0.lora_A["default"].weight, torch.full((4, 16), 7.0))  # and partly loaded
