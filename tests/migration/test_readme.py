"""README.md's "Use" block runs as written (in a scratch folder), and the mistake it warns about
(loading into the base model that get_peft_model already changed) is one clear error."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from peft_core import PeftError, PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import tiny_llama

README = Path(__file__).parents[2] / "README.md"


def _use_block() -> str:
    section = README.read_text().split("## Use", 1)[1]
    found = re.search(r"```python\n(.*?)\n```", section, flags=re.S)
    assert found, "README.md has no python block under '## Use'"
    return found.group(1)


def test_the_readme_use_block_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "use.py"
    script.write_text(_use_block())
    namespace = runpy.run_path(str(script))
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    merged = namespace["merged"]
    assert not isinstance(merged, PeftModel) and "lora" not in str(merged)


def test_loading_into_the_base_model_get_peft_model_changed_says_what_happened(tmp_path: Path) -> None:
    base = tiny_llama()
    model = get_peft_model(base, LoraConfig(target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    with pytest.raises(PeftError, match=r"already holds the adapters \['default'\]: get_peft_model .* in place"):
        PeftModel.from_pretrained(base, tmp_path)
    with pytest.raises(PeftError, match="already holds the adapters"):
        get_peft_model(base, LoraConfig(target_modules=["v_proj"]))
    with pytest.raises(PeftError, match="the model is a PeftModel already; add another adapter"):
        get_peft_model(model, LoraConfig(target_modules=["v_proj"]))
    assert list(model.peft_config) == ["default"]
