"""``peft-core inspect``: config, tuner, tensors, parameter count and size, ours and Hugging Face's."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
from safetensors.torch import load_file

from peft_core.cli import main
from peft_lora import LoraConfig
from support.environments import ON_DORA, python_in, site_without
from support.hf_peft import base_model, hf_model, our_model


def _hf_adapters(directory: Path) -> None:
    model = hf_model(base_model("llama"), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.add_adapter("second", peft.LoraConfig(r=2, target_modules=["k_proj"], modules_to_save=["lm_head"]))
    model.save_pretrained(directory)


def test_inspect_shows_every_tensor_the_config_and_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = our_model(base_model("gpt2"), LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"]))
    model.save_pretrained(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert "adapter 'default'" in out and "peft_type: LORA" in out and "tuner: lora (peft-lora" in out
    assert "    r: 4" in out and "    lora_alpha: 16" in out and '    target_modules: ["c_attn"]' in out
    for key, tensor in tensors.items():
        shape = "(" + ", ".join(map(str, tensor.shape)) + ")"
        assert any(line.split() == [key, *shape.split(), "float32"] for line in out.splitlines()), key
    parameters = sum(t.numel() for t in tensors.values())
    assert f"tensors: 4, parameters: {parameters:,d}, size: {parameters * 4 / 1024:.2f} KiB" in out


def test_inspect_reads_hf_peft_adapters_with_subfolders_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _hf_adapters(tmp_path)
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in report] == ["default", "second"]
    for adapter, folder in zip(report, (tmp_path, tmp_path / "second"), strict=True):
        tensors = load_file(folder / "adapter_model.safetensors")
        assert {t["name"]: t["shape"] for t in adapter["tensors"]} == {k: list(v.shape) for k, v in tensors.items()}
        assert adapter["parameters"] == sum(t.numel() for t in tensors.values())
        assert adapter["size_bytes"] == 4 * adapter["parameters"]
        assert adapter["file_bytes"] == (folder / "adapter_model.safetensors").stat().st_size
        assert adapter["tuner"].startswith("lora") and adapter["problem"] is None
    assert report[1]["config"]["modules_to_save"] == ["lm_head"] and report[1]["config"]["r"] == 2


def test_inspect_explains_why_an_adapter_cannot_be_loaded(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    hf_model(base_model("llama"), peft.LoraConfig(target_modules=["q_proj"], use_dora=True)).save_pretrained(adapter)
    site = site_without(tmp_path / "site", ON_DORA)  # a user who has not installed peft-dora
    result = python_in(site, ["-m", "peft_core.cli", "inspect", str(adapter)], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "cannot be loaded here:" in out and "use_dora=True" in out and "pip install peft-dora" in out
    assert "lora_magnitude_vector" in out  # the tensors are still listed


def test_inspect_of_a_dora_adapter_with_peft_dora_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf_model(base_model("llama"), peft.LoraConfig(target_modules=["q_proj"], use_dora=True)).save_pretrained(tmp_path)
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["problem"] is None and report["tuner"].startswith("lora") and report["config"]["use_dora"] is True
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    magnitudes = {t["name"]: t["shape"] for t in report["tensors"] if t["name"].endswith("lora_magnitude_vector")}
    assert magnitudes == {k: list(v.shape) for k, v in tensors.items() if k.endswith("lora_magnitude_vector")}
    assert len(magnitudes) == 2  # q_proj of both layers


def test_inspect_of_a_folder_without_adapter_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: no adapter in {tmp_path}: neither it nor a subfolder has an adapter_config.json"
    )
