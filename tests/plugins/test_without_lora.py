"""LoRA is registered only through its entry point: without peft-lora the core runs and LoRA is absent."""

from __future__ import annotations

import sys
from pathlib import Path

from plugin_installs import python

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


def _without_peft_lora(farm: Path) -> Path:
    """A folder that shows every importable entry of ``sys.path`` except peft-lora's (and
    plugins built on it): what an environment looks like after ``pip uninstall peft-lora``."""
    farm.mkdir()
    for entry in map(Path, sys.path):
        if not entry.is_dir() or entry == Path.cwd():
            continue
        for child in entry.iterdir():
            if "peft_lora" in child.name.replace("-", "_") or (farm / child.name).exists():
                continue  # the first entry of sys.path wins, as for imports
            (farm / child.name).symlink_to(child)
    return farm


def test_without_peft_lora_the_core_runs_and_lora_is_simply_absent(tmp_path: Path) -> None:
    site = _without_peft_lora(tmp_path / "site")
    result = python(["-S", "-c", CHECK], site, cwd=tmp_path)  # -S: no site-packages but the folder
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
