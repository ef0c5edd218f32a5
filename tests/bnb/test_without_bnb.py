"""Without peft-bnb, bitsandbytes layers are refused by name: never wrapped as if their packed weight were the weight.

Hugging Face PEFT-style wrapping without knowing the layer built LoRA factors from a
4-bit layer's packed ``(out * in / 2, 1)`` storage (a wrong parameter count, then shape
errors) and merged into an 8-bit weight's bytes (outputs 0.52 away, silently). In an
environment without peft-bnb, the core refuses such a layer, naming the plugin, and
leaves the model as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")

from support.environments import python_in, site_without

CHECK = """
import warnings
warnings.simplefilter("ignore")
import importlib.util
import peft_core
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.quantized import quantized_llama
assert importlib.util.find_spec("peft_bnb") is None
for kind in ("nf4_double", "int8"):
    for config in (LoraConfig(r=8, target_modules=["q_proj"]), IA3Config(target_modules=["q_proj"])):
        model = quantized_llama(kind)
        before = [type(m).__name__ for m in model.modules()]
        try:
            peft_core.get_peft_model(model, config)
            print(kind, "wrapped")
        except peft_core.ConfigError as exc:
            print(kind, type(exc).__name__, exc)
        assert [type(m).__name__ for m in model.modules()] == before, "the model was changed"
"""


def test_without_peft_bnb_quantized_layers_are_refused_naming_it(tmp_path: Path) -> None:
    site = site_without(tmp_path / "site", ["peft_bnb"])
    result = python_in(site, ["-c", CHECK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Other libraries may log to stdout (DeepSpeed, when installed, names its accelerator).
    lines = [line for line in result.stdout.splitlines() if line.startswith(("nf4_double ", "int8 "))]
    assert len(lines) == 4, result.stdout
    for line, kind, layer in zip(
        lines, ["nf4_double"] * 2 + ["int8"] * 2, ["Linear4bit"] * 2 + ["Linear8bitLt"] * 2, strict=True
    ):
        assert line.startswith(f"{kind} ConfigError 'model.layers.0.self_attn.q_proj' is a "), line
        assert f"bitsandbytes.nn.modules.{layer} whose weights are not plain float tensors" in line, line
        assert line.endswith("pip install peft-bnb"), line
