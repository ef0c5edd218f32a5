"""Saving: config and weights replace the old pair together; nothing escapes; nothing is unpickled.

Also proven in tests/core/test_checkpoint.py: a failing weights write leaves the old files
(and no temp files); 0-element tensors are refused on save; a legacy .bin holding code is
refused; tests/core/test_peft_model.py: adapter names with '.', '/' are refused.
"""

from __future__ import annotations

import ast
import copy
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import peft_core.io.file_commit as file_commit
from peft_core import AdapterLoadError, AdapterSaveError, PeftModel
from peft_lora import LoraConfig
from reliability.common import X, incumbent, lora_mlp
from support.models import MLP

ROOT = Path(__file__).resolve().parents[2]


class Crash(BaseException):
    """A kill -9 stand-in: nothing after it runs (cleanup is switched off too)."""


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _outputs(base: nn.Module, directory: Path) -> torch.Tensor:
    with torch.no_grad():
        return PeftModel.from_pretrained(copy.deepcopy(base), directory)(X)


def _old_and_new(tmp_path: Path) -> tuple[nn.Module, PeftModel, torch.Tensor, torch.Tensor]:
    """An adapter saved in tmp_path ("old"), and the model changed so that a save writes "new"."""
    base, model = lora_mlp()
    model.save_pretrained(tmp_path)
    old = _outputs(base, tmp_path)
    model.peft_config["default"].lora_alpha = 3  # the config alone changes the outputs
    with torch.no_grad():
        model.base_model.model.lin0.lora_B["default"].weight.mul_(2)
        for layer in (model.base_model.model.lin0, model.base_model.model.lin1):
            layer.scaling["default"] = 3 / 4
        new = model(X)
    assert not torch.allclose(old, new)
    return base, model, old, new


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, name: str, n: int, error: BaseException) -> None:
    real = getattr(file_commit, name) if name != "replace" else os.replace
    calls = []

    def failing(*args: object) -> object:
        calls.append(args)
        if len(calls) == n:
            raise error
        return real(*args)

    if name == "replace":
        monkeypatch.setattr(file_commit.os, "replace", failing)
    else:
        monkeypatch.setattr(file_commit, name, failing)


# The renames of a commit: journal in, old weights out, old config out, new weights in, new config in.
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_an_error_at_any_rename_leaves_the_previous_pair_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    base, model, old, _ = _old_and_new(tmp_path)
    before = _files(tmp_path)
    _fail_on_call(monkeypatch, "replace", n, OSError("device went away"))
    with pytest.raises(AdapterSaveError, match="device went away; the previous files are intact"):
        model.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert _files(tmp_path) == before
    assert torch.equal(_outputs(base, tmp_path), old)


def test_an_error_writing_the_config_leaves_the_previous_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, model, _, _ = _old_and_new(tmp_path)
    before = _files(tmp_path)
    _fail_on_call(monkeypatch, "_write_synced", 2, OSError("quota exceeded"))  # weights staged, then config
    with pytest.raises(AdapterSaveError, match="quota exceeded"):
        model.save_pretrained(tmp_path)
    assert _files(tmp_path) == before


CRASH_POINTS = [("replace", n, "old") for n in range(1, 6)] + [
    ("_fsync_dir", 1, "old"),  # journal in place
    ("_fsync_dir", 2, "old"),  # both new files in place, journal not yet gone
    ("_fsync_dir", 3, "new"),  # after the commit point, backups not yet deleted
]


@pytest.mark.parametrize(("step", "n", "expected"), CRASH_POINTS)
def test_a_crash_at_any_point_leaves_a_consistent_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, n: int, expected: str
) -> None:
    base, model, old, new = _old_and_new(tmp_path)
    monkeypatch.setattr(file_commit, "recover", lambda directory, names: None)  # a crash runs no cleanup
    _fail_on_call(monkeypatch, step, n, Crash())
    with pytest.raises(Crash):
        model.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert torch.equal(_outputs(base, tmp_path), old if expected == "old" else new)
    model.save_pretrained(tmp_path)  # the next save recovers and tidies up
    assert sorted(_files(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert torch.equal(_outputs(base, tmp_path), new)


def test_a_crash_during_the_first_save_leaves_no_adapter_rather_than_half_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model = lora_mlp()
    monkeypatch.setattr(file_commit, "recover", lambda directory, names: None)
    _fail_on_call(monkeypatch, "replace", 3, Crash())  # new weights in place, config not yet
    with pytest.raises(Crash):
        model.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "adapter_model.safetensors").exists()
    with pytest.raises(AdapterLoadError, match="no adapter_config.json"):
        PeftModel.from_pretrained(MLP(), tmp_path)


def test_an_adapter_folder_that_points_outside_the_save_directory_is_refused(tmp_path: Path) -> None:
    _, model = lora_mlp()
    model.add_adapter("second", LoraConfig(target_modules=["lin1"]))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / "second").symlink_to(outside, target_is_directory=True)
    with pytest.raises(AdapterSaveError, match="points outside"):
        model.save_pretrained(tmp_path / "save")
    assert list(outside.iterdir()) == []


def test_tensors_with_nan_are_refused_on_save(tmp_path: Path) -> None:
    _, model = lora_mlp()
    with torch.no_grad():
        model.base_model.model.lin1.lora_A["default"].weight[1, 1] = float("inf")
    with pytest.raises(AdapterSaveError, match=r"NaN/inf values \['base_model.model.lin1.lora_A.weight'\]"):
        model.save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.incumbent
def test_incumbent_saves_empty_tensors_with_only_a_warning(tmp_path: Path) -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0"]))
    model.base_model.model.lin0.lora_A["default"].weight = nn.Parameter(torch.empty(0))
    with pytest.warns(UserWarning, match="invalid shape"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()


def _sources() -> list[Path]:
    return sorted([*ROOT.glob("core/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")])


def _calls(tree: ast.AST, predicate: Callable[[ast.Call], bool]) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and predicate(node)]


def test_no_source_file_can_unpickle_or_run_code() -> None:
    found: list[str] = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [
                    f"{path.name}: imports {n}" for n in names if n.split(".")[0] in ("pickle", "dill", "marshal")
                ]
        for call in _calls(tree, lambda c: isinstance(c.func, ast.Name) and c.func.id in ("eval", "exec")):
            found.append(f"{path.name}:{call.lineno}: {ast.unparse(call.func)}")
        for call in _calls(tree, lambda c: isinstance(c.func, ast.Attribute) and c.func.attr == "load"):
            if ast.unparse(call.func) == "torch.load":
                safe = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in call.keywords)
                found += [] if safe else [f"{path.name}:{call.lineno}: torch.load without weights_only=True"]
    assert len(_sources()) > 20 and not found


def test_a_config_is_data_only(tmp_path: Path) -> None:
    base, model = lora_mlp()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    marker = tmp_path / "pwned"
    config["auto_mapping"] = {"base_model_class": "os.system", "parent_library": f"os; touch {marker}"}
    config["base_model_name_or_path"] = f"__import__('os').system('touch {marker}')"
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert loaded.peft_config["default"].base_model_name_or_path == config["base_model_name_or_path"]  # a string
    assert not marker.exists()
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"lora_alpha": float("nan")}))
    with pytest.raises(AdapterLoadError, match="lora_alpha"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
