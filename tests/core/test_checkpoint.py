"""Checkpoints: the Hugging Face PEFT layout, round trips, atomic saves, loads that fail cleanly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from peft_core import (
    AdapterLoadError,
    AdapterSaveError,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft_lora import LoraConfig
from support.models import MLP

X = torch.arange(12).reshape(3, 4) % 20


def _trained(**kwargs: object) -> tuple[nn.Module, PeftModel]:
    base = MLP()
    config = LoraConfig(**({"r": 4, "target_modules": ["lin0", "emb"], "init_lora_weights": False} | kwargs))
    model = get_peft_model(copy.deepcopy(base), config)
    return base, model


@torch.no_grad()
def _out(model: nn.Module) -> torch.Tensor:
    return model(X)


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "types": [(n, type(m).__name__) for n, m in model.named_modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    sa, sb = a["state"], b["state"]
    assert isinstance(sa, dict) and isinstance(sb, dict)
    return a["types"] == b["types"] and a["grads"] == b["grads"] and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_saved_files_follow_the_hugging_face_layout(tmp_path: Path) -> None:
    _, model = _trained(modules_to_save=["head"])
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "base_model.model.emb.lora_embedding_A": (4, 20),
        "base_model.model.emb.lora_embedding_B": (16, 4),
        "base_model.model.lin0.lora_A.weight": (4, 16),
        "base_model.model.lin0.lora_B.weight": (16, 4),
        "base_model.model.head.weight": (3, 16),
        "base_model.model.head.bias": (3,),
    }
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    text = (tmp_path / "adapter_config.json").read_text()
    config = json.loads(text)
    assert list(config) == sorted(config) and text.startswith('{\n  "')
    assert config["inference_mode"] is True and config["peft_type"] == "LORA" and config["r"] == 4


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    base, model = _trained(modules_to_save=["head"])
    with torch.no_grad():
        model.base_model.model.head.modules_to_save["default"].weight.mul_(2)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert torch.equal(_out(loaded), _out(model))
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.peft_config["default"].inference_mode


def test_load_as_trainable(tmp_path: Path) -> None:
    base, model = _trained()
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_non_default_adapters_live_in_subfolders_and_load_under_any_name(tmp_path: Path) -> None:
    base, model = _trained()
    model.add_adapter("second", LoraConfig(r=2, target_modules=["lin1"], init_lora_weights=False))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "second" / "adapter_model.safetensors").is_file()
    assert set(load_file(tmp_path / "second" / "adapter_model.safetensors")) == {
        "base_model.model.lin1.lora_A.weight",
        "base_model.model.lin1.lora_B.weight",
    }
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, adapter_name="first")
    loaded.load_adapter(tmp_path / "second", adapter_name="second")
    for name in ("default", "second"):
        model.set_adapter(name)
        loaded.set_adapter("first" if name == "default" else name)
        assert torch.equal(_out(loaded), _out(model))
    model.save_pretrained(tmp_path / "only", selected_adapters=["second"])
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["README.md", "second"]


def test_adapter_names_that_are_key_prefixes_or_weird_module_names_work(tmp_path: Path) -> None:
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weighted_sum = nn.Linear(4, 4)
            self.lora = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lora(self.weighted_sum(x))

    base = Weird()
    config = LoraConfig(r=2, target_modules=["weighted_sum", "lora"], init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), config, adapter_name="lora")
    model.save_pretrained(tmp_path, selected_adapters=["lora"])
    assert set(load_file(tmp_path / "lora" / "adapter_model.safetensors")) == {
        "base_model.model.weighted_sum.lora_A.weight",
        "base_model.model.weighted_sum.lora_B.weight",
        "base_model.model.lora.lora_A.weight",
        "base_model.model.lora.lora_B.weight",
    }
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "lora", adapter_name="weight")
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_failed_save_leaves_the_previous_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, model = _trained()
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.base_model.model.lin0.lora_A["default"].weight.add_(1)

    def broken_save(tensors: dict, path: str, metadata: dict) -> None:
        Path(path).write_bytes(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr("peft_core.io.checkpoint.save_file", broken_save)
    with pytest.raises(AdapterSaveError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files left either
    PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)


def test_empty_tensors_are_refused_on_save(tmp_path: Path) -> None:
    _, model = _trained()
    model.base_model.model.lin0.lora_A["default"].weight = nn.Parameter(torch.empty(0))
    with pytest.raises(AdapterSaveError, match="0-element"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.pop("base_model.model.lin0.lora_B.weight"), r"1 missing:\s+base_model.model.lin0.lora_B.weight"),
        (lambda t: t.update({"base_model.model.lin1.lora_A.weight": torch.ones(4, 16)}), "1 unexpected"),
        (
            lambda t: t.update({"base_model.model.lin0.lora_A.weight": torch.ones(3, 16)}),
            r"\(\(3, 16\), float32\) vs model",
        ),
        (lambda t: t.update({"base_model.model.lin0.lora_A.weight": torch.ones(4, 16, dtype=torch.int64)}), "int64"),
        (lambda t: t.update({"base_model.model.lin0.lora_A.weight": torch.ones(0)}), "mismatched"),
    ],
)
def test_a_checkpoint_that_does_not_fit_fails_before_touching_the_model(
    tmp_path: Path, mutate: object, message: str
) -> None:
    base, model = _trained()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    mutate(tensors)  # type: ignore[operator]
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    target = copy.deepcopy(base)
    before = _snapshot(target)
    with pytest.raises(AdapterLoadError, match=message):
        PeftModel.from_pretrained(target, tmp_path)
    assert _same(_snapshot(target), before)


def test_load_adapter_failure_leaves_the_peft_model_unchanged(tmp_path: Path) -> None:
    base, model = _trained()
    other = get_peft_model(copy.deepcopy(base), LoraConfig(r=3, target_modules=["lin1"]))
    other.save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    before = _snapshot(model)
    with pytest.raises(AdapterLoadError, match="cannot read adapter weights"):
        model.load_adapter(tmp_path, "other")
    assert _same(_snapshot(model), before) and list(model.peft_config) == ["default"]


def test_non_strict_load_reports_the_difference_as_a_warning(tmp_path: Path) -> None:
    base, model = _trained()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors["base_model.model.extra.weight"] = torch.ones(1)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    with pytest.warns(UserWarning, match=r"1 unexpected:\s+base_model.model.extra.weight"):
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, strict=False)
    assert torch.equal(_out(loaded), _out(model))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no adapter_config.json"),
        ({"adapter_config.json": "{not json"}, "not valid JSON"),
        ({"adapter_config.json": "[1, 2]"}, "must hold a JSON object"),
        ({"adapter_config.json": '{"peft_type": "VERA"}'}, "peft_type 'VERA'"),
        ({"adapter_config.json": '{"peft_type": "LORA", "target_modules": ["lin0"]}'}, "no adapter_model.safetensors"),
        ({"adapter_config.json": '{"peft_type": "LORA", "r": -1}'}, "greater than 0"),
    ],
)
def test_broken_adapter_directories_give_one_clear_error(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    target = MLP()
    before = _snapshot(target)
    with pytest.raises(AdapterLoadError, match=message):
        PeftModel.from_pretrained(target, tmp_path)
    assert _same(_snapshot(target), before)


def test_legacy_bin_files_load_without_unpickling_code(tmp_path: Path) -> None:
    base, model = _trained()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_model.safetensors").unlink()
    torch.save(tensors, tmp_path / "adapter_model.bin")
    assert torch.equal(_out(PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)), _out(model))

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "adapter_model.bin")
    with pytest.raises(AdapterLoadError, match="cannot read adapter weights"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)


def test_low_level_functions_on_a_plain_module() -> None:
    base = MLP()
    model = inject_adapter_in_model(
        LoraConfig(r=2, target_modules=["lin0"], init_lora_weights=False), copy.deepcopy(base)
    )
    state = get_peft_model_state_dict(model)
    assert set(state) == {"lin0.lora_A.weight", "lin0.lora_B.weight"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora" not in n)
    fresh = inject_adapter_in_model(LoraConfig(r=2, target_modules=["lin0"]), copy.deepcopy(base))
    report = set_peft_model_state_dict(fresh, state)
    assert report.ok
    assert torch.equal(_out(fresh), _out(model))
