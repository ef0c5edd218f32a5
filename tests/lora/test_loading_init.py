"""A load skips initialising adapter weights only when the checkpoint overwrites every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core import PeftModel, get_peft_model
from peft_core.contract import weights_will_be_loaded
from peft_lora import LoraConfig
from peft_lora.layer import Linear
from support.models import MLP

RANK = 8


def _saved(tmp_path: Path) -> Path:
    config = LoraConfig(r=RANK, target_modules=["lin0", "lin1"], init_lora_weights="gaussian")
    model = get_peft_model(MLP(), config)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(1.0)  # far from any init: a leftover init would show
    model.save_pretrained(tmp_path)
    return tmp_path


def _spy_on_updates(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    seen: list[bool] = []
    original = Linear.update_layer

    def update_layer(self: Linear, adapter_name: str, config: LoraConfig) -> None:
        seen.append(weights_will_be_loaded())
        original(self, adapter_name, config)

    monkeypatch.setattr(Linear, "update_layer", update_layer)
    return seen


def test_a_full_checkpoint_skips_the_init_and_loads_every_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _saved(tmp_path)
    seen = _spy_on_updates(monkeypatch)
    loaded = PeftModel.from_pretrained(MLP(), directory)
    assert seen and all(seen)  # the meta pre-check and the real injection, both without init
    saved = load_file(directory / "adapter_model.safetensors")
    state = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved) == 4
    for key, value in saved.items():
        assert torch.equal(state[key.replace(".weight", ".default.weight")], value)
    assert not weights_will_be_loaded()  # the flag lives only inside the load


def test_get_peft_model_and_partial_checkpoints_initialise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _saved(tmp_path)
    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    missing = "base_model.model.lin1.lora_A.weight"
    del tensors[missing]
    save_file(tensors, path)
    seen = _spy_on_updates(monkeypatch)
    with pytest.warns(UserWarning, match="non-strictly"):
        loaded = PeftModel.from_pretrained(MLP(), directory, strict=False)
    assert seen[-2:] == [False, False]  # the real injection initialised
    a = loaded.base_model.model.lin1.lora_A["default"].weight
    assert abs(float(a.std()) - 1 / RANK) < 0.3 / RANK  # "gaussian": N(0, 1/r), not leftover memory
    seen.clear()
    get_peft_model(MLP(), LoraConfig(r=RANK, target_modules=["lin0"]))
    assert seen == [False]
