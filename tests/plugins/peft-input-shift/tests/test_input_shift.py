"""The v2 model-level contract end to end, through a prompt-style test plugin (peft-input-shift).

Proves: a tuner without module targets (``targets_modules = False``), a model-level adapter
(``create_model_adapter``), ``prepare_inputs``, ``prepare_generation_inputs`` with and
without a KV cache, tuner-owned checkpoint keys, ``prepare_config`` returning a copy,
``peft_add_hookspecs`` (a hook the plugin declares, implemented by another entry point that
loads first) and ``peft_cli_commands``; and that undeclared capabilities are refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core import MergeError, PeftError, PeftModel, get_peft_model, inject_adapter_in_model
from peft_core.cli import main
from peft_core.testing import TunerConformance
from peft_input_shift import InputShiftConfig
from support.models import tiny_llama, token_ids

IDS = token_ids(batch=3, length=6)


class TestInputShiftConformance(TunerConformance):
    config = InputShiftConfig()

    def make_model(self) -> nn.Module:
        return tiny_llama()

    def make_inputs(self) -> Any:
        return {"input_ids": IDS}


def _shifted(seed: int = 1) -> tuple[nn.Module, PeftModel, Tensor]:
    base = tiny_llama()
    model = get_peft_model(copy.deepcopy(base), InputShiftConfig())
    shift = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.base_model.adapter_module("default").get_parameter("shift").copy_(shift)
    return base, model, shift


def test_prepare_inputs_adds_the_shift_to_every_input_embedding() -> None:
    base, model, shift = _shifted()
    with torch.no_grad():
        expected = base(inputs_embeds=base.get_input_embeddings()(IDS) + shift).logits
        torch.testing.assert_close(model(IDS).logits, expected, atol=1e-6, rtol=0)  # positional input_ids too
        torch.testing.assert_close(model(input_ids=IDS).logits, expected, atol=1e-6, rtol=0)
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=IDS).logits, base(input_ids=IDS).logits, atol=0, rtol=0)


def _greedy(model: PeftModel, prompt: Tensor, steps: int) -> Tensor:
    """Greedy decoding by full forward passes, no cache: the reference for generate()."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            next_token = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_token], dim=1)
    return ids


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_applies_the_hook_at_every_step_with_and_without_a_cache(use_cache: bool) -> None:
    _, model, _ = _shifted(seed=3)
    prompt = IDS[:1]
    expected = _greedy(model, prompt, steps=8)
    generated = model.generate(input_ids=prompt, max_new_tokens=8, do_sample=False, use_cache=use_cache)
    assert torch.equal(generated, expected)
    with model.disable_adapter():  # the hook runs only with adapters enabled
        plain = model.generate(input_ids=prompt, max_new_tokens=8, do_sample=False, use_cache=use_cache)
    assert not torch.equal(plain, generated)
    assert "prepare_inputs_for_generation" not in model.get_base_model().__dict__  # the class method again


def test_the_checkpoint_key_is_the_tuners_and_holds_no_module_targeting(tmp_path: Path) -> None:
    base, model, shift = _shifted()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert list(tensors) == ["input_shift"] and torch.equal(tensors["input_shift"], shift)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "INPUT_SHIFT" and saved["token_dim"] == 32
    assert not {"target_modules", "modules_to_save", "layers_to_transform"} & set(saved)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits)


def test_prepare_config_fills_in_a_copy_and_leaves_the_users_config_alone() -> None:
    config = InputShiftConfig()
    before = config.model_dump()
    model = get_peft_model(tiny_llama(), config)
    assert config.model_dump() == before and config.token_dim is None
    assert model.peft_config["default"].token_dim == 32 and model.peft_config["default"] is not config


def test_a_hook_declared_by_the_plugin_is_answered_by_another_plugin_loaded_before_it() -> None:
    model = get_peft_model(tiny_llama(), InputShiftConfig(init="hook"))
    shift = model.base_model.adapter_module("default").get_parameter("shift")
    assert torch.equal(shift.detach(), torch.full((32,), 0.5))


def test_the_plugin_adds_a_cli_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["input-shift-info", "--dim", "3"]) == 0
    assert capsys.readouterr().out == "input_shift: a learned shift of the input embeddings, dim 3\n"


def test_two_adapters_switch_and_each_trains_alone() -> None:
    _, model, _ = _shifted()
    model.add_adapter("other", InputShiftConfig())
    with torch.no_grad():
        first = model(input_ids=IDS).logits
        model.set_adapter("other")
        assert not torch.allclose(model(input_ids=IDS).logits, first)
        model.set_adapter("default")
        assert torch.equal(model(input_ids=IDS).logits, first)
    with pytest.raises(PeftError, match="one adapter at a time"):
        model.set_adapter(["default", "other"])


def test_what_it_does_not_declare_is_refused() -> None:
    _, model, _ = _shifted()
    with pytest.raises(MergeError, match="cannot be merged"):
        model.merge_and_unload()
    with pytest.raises(PeftError, match=r"not supported by input_shift \(capabilities.per_row\)"):
        model(input_ids=IDS, adapter_names=["default", "default", "__base__"])
    with pytest.raises(PeftError, match="add_weighted_adapter"):
        model.add_weighted_adapter(["default"], [1.0], "combined")
    plain = tiny_llama()
    with pytest.raises(PeftError, match="needs a PeftModel: use get_peft_model"):
        inject_adapter_in_model(InputShiftConfig(), plain)
    assert "peft_config" not in plain.__dict__  # nothing was left behind
