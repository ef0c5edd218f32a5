"""LoRA is registered only through its entry point: without peft-lora the core runs and LoRA is absent."""

from __future__ import annotations

from pathlib import Path

from support.environments import ON_LORA, python_in, site_without

CHECK = """
import warnings
warnings.simplefilter("error")  # a missing plugin is not a broken one: no warnings
import importlib.util
import peft_core
from torch import nn
assert importlib.util.find_spec("peft_lora") is None
print("plugins:", sorted(p.name for p in peft_core.registry.plugins()))
try:
    from peft_core import LoraConfig
except ImportError as exc:
    print("LoraConfig:", type(exc).__name__, exc)
try:
    peft_core.registry.get_tuner("lora")
except peft_core.PeftError as exc:
    print("get_tuner:", type(exc).__name__, exc)
from peft_ia3 import IA3Config
model = peft_core.get_peft_model(nn.Sequential(nn.Linear(4, 4)), IA3Config(target_modules=["0"]))
print("ia3 trainable:", model.get_nb_trainable_parameters()[0])
"""


def test_without_peft_lora_the_core_runs_and_lora_is_simply_absent(tmp_path: Path) -> None:
    site = site_without(tmp_path / "site", ON_LORA)  # peft-lora and the plugins built on it
    result = python_in(site, ["-c", CHECK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert "'lora'" not in lines["plugins"] and "'ia3'" in lines["plugins"]
    assert lines["LoraConfig"] == (
        "PluginNotInstalledError LoraConfig comes with the peft-lora plugin, which is not installed: "
        "pip install peft-lora"
    )
    assert lines["get_tuner"].startswith("PluginError no tuner named 'lora'")
    assert "pip install peft-lora" in lines["get_tuner"]
    assert lines["ia3 trainable"] == "4"
