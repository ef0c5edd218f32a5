"""``peft-core merge``: a plain transformers checkpoint, never half-written, never overwritten silently."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from peft_core import PeftModel
from peft_core.cli import main
from peft_lora import LoraConfig
from support.hf_peft import add_noise, base_model, hf_model, our_model, outputs
from support.models import token_ids


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """A saved tiny Llama with a tokenizer file, and a trained adapter for it."""
    base = base_model("llama")
    base.save_pretrained(tmp_path / "base")  # type: ignore[operator]
    (tmp_path / "base" / "tokenizer_config.json").write_text('{"model_max_length": 32}')
    model = our_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    return {"base": tmp_path / "base", "adapter": tmp_path / "adapter", "out": tmp_path / "out"}


def _merge(folders: dict[str, Path], *extra: str) -> int:
    argv = ["merge", "--base", str(folders["base"]), "--adapter", str(folders["adapter"]), "--out", str(folders["out"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main([*argv, *extra])


def _load(folder: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(folder).eval()


def _unmerged(folders: dict[str, Path]) -> torch.Tensor:
    return outputs(PeftModel.from_pretrained(_load(folders["base"]), folders["adapter"]), token_ids())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


def test_merge_writes_a_transformers_checkpoint_that_loads_and_matches(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _merge(folders) == 0
    out = folders["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer_config.json",
    ]
    assert set(load_file(out / "model.safetensors")) == set(load_file(folders["base"] / "model.safetensors"))
    merged = outputs(_load(out), token_ids())
    torch.testing.assert_close(merged, _unmerged(folders), atol=1e-4, rtol=0)
    assert not torch.allclose(merged, outputs(_load(folders["base"]), token_ids()), atol=1e-3)
    captured = capsys.readouterr()
    assert f"merged {folders['adapter']} into {folders['base']}: {out}" in captured.out
    assert "merge: 100%" in captured.err and "5/5" in captured.err  # the tqdm bar, one step per stage
    assert _leftovers(out) == []


def test_merge_of_a_hf_peft_adapter_matches_hf_merge_and_unload(tmp_path: Path) -> None:
    base = base_model("gpt2")
    base.save_pretrained(tmp_path / "base")  # type: ignore[operator]
    theirs = hf_model(base, peft.LoraConfig(r=4, target_modules=["c_attn", "c_fc"], init_lora_weights=False))
    add_noise(theirs)
    theirs.save_pretrained(tmp_path / "adapter")
    folders = {"base": tmp_path / "base", "adapter": tmp_path / "adapter", "out": tmp_path / "out"}
    assert _merge(folders, "--quiet") == 0
    expected = outputs(theirs.merge_and_unload(), token_ids())
    torch.testing.assert_close(outputs(_load(folders["out"]), token_ids()), expected, atol=1e-4, rtol=0)


def test_merge_to_bfloat16(folders: dict[str, Path]) -> None:
    assert _merge(folders, "--dtype", "bfloat16", "--quiet") == 0
    assert {t.dtype for t in load_file(folders["out"] / "model.safetensors").values()} == {torch.bfloat16}
    merged = outputs(_load(folders["out"]).float(), token_ids())
    torch.testing.assert_close(merged, _unmerged(folders), atol=0.1, rtol=0.05)  # bf16 rounding of weights


def test_an_existing_output_is_kept_without_force_and_replaced_with_it(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = folders["out"]
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert _merge(folders, "--quiet") == 1
    assert "exists and is not empty; pass --force to replace it" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert _merge(folders, "--quiet", "--force") == 0
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").is_file()
    assert _leftovers(out) == []


def test_a_failed_merge_leaves_no_output_and_the_old_one_intact(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = folders["out"]
    assert _merge(folders, "--quiet") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_save(self: torch.nn.Module, directory: Path, **_: Any) -> None:
        (Path(directory) / "model.safetensors").write_bytes(b"half-written")
        raise OSError("No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken_save)
    assert _merge(folders, "--quiet", "--force") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(out) == []


def test_an_adapter_that_does_not_fit_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = base_model("llama")
    base.save_pretrained(tmp_path / "base")  # type: ignore[operator]
    our_model(base_model("gpt2"), LoraConfig(target_modules=["c_attn"])).save_pretrained(tmp_path / "adapter")
    folders = {"base": tmp_path / "base", "adapter": tmp_path / "adapter", "out": tmp_path / "out"}
    assert _merge(folders, "--quiet") == 1
    err = capsys.readouterr().err
    assert "error: adapter in" in err and "'c_attn'" in err
    assert not folders["out"].exists() and _leftovers(folders["out"]) == []


def test_merge_without_tqdm_prints_plain_stages(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_tqdm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert _merge(folders) == 0
    err = capsys.readouterr().err
    assert all(f"merge: {stage}..." in err for stage in ("load base model", "load adapter", "merge", "save"))


def test_missing_base_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = {"base": tmp_path / "nowhere", "adapter": tmp_path, "out": tmp_path / "out"}
    assert _merge(folders) == 1
    assert "--base" in capsys.readouterr().err and not folders["out"].exists()
