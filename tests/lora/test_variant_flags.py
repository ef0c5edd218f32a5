"""LoRA variants (``use_dora``...) are flags of LoraConfig taken by another plugin through
peft-lora's own hook ``peft_lora_variant``; without that plugin, one clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import peft_core
from peft_core import ConfigError, PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import MLP


@pytest.fixture
def without_variant_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry as if peft-dora were not installed (it may be, in this environment)."""
    monkeypatch.setenv("PEFT_CORE_DISABLE_PLUGINS", "dora,peft-dora")
    peft_core.registry.reset()
    yield
    monkeypatch.delenv("PEFT_CORE_DISABLE_PLUGINS")
    peft_core.registry.reset()


def test_the_flag_is_a_config_field_in_the_incumbents_format() -> None:
    config = LoraConfig(target_modules=["lin0"], use_dora=True)  # no "extra inputs" error
    assert config.to_json_dict()["use_dora"] is True and config.to_json_dict()["peft_type"] == "LORA"


@pytest.mark.usefixtures("without_variant_plugins")
def test_without_the_variant_plugin_the_flag_is_one_error_naming_it() -> None:
    model = MLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = LoraConfig(target_modules=["lin0"], use_dora=True)
    with pytest.raises(ConfigError, match=r"use_dora=True.*peft-dora plugin.*pip install peft-dora"):
        get_peft_model(model, config)
    assert [type(m) for m in model.modules()] == [type(m) for m in MLP().modules()]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert config.use_dora is True  # the user's config is as it was


@pytest.mark.usefixtures("without_variant_plugins")
def test_a_saved_variant_adapter_cannot_be_loaded_without_its_plugin(tmp_path: Path) -> None:
    folder = tmp_path
    get_peft_model(MLP(), LoraConfig(target_modules=["lin0"])).save_pretrained(folder)
    config = (folder / "adapter_config.json").read_text().replace('"use_dora": false', '"use_dora": true')
    (folder / "adapter_config.json").write_text(config)
    with pytest.raises(peft_core.AdapterLoadError, match="pip install peft-dora"):
        PeftModel.from_pretrained(MLP(), folder)
