"""LoRA on small random GPT-2 (Conv1D), BERT and Llama models built from configs."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import tiny_bert, tiny_gpt2, tiny_llama, token_ids
from support.training import train

MODELS: dict[str, tuple[Callable[[], nn.Module], list[str], list[str] | None]] = {
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj", "c_fc"], None),
    "bert": (tiny_bert, ["query", "value", "dense"], ["classifier"]),
    "llama": (tiny_llama, ["q_proj", "v_proj", "gate_proj", "embed_tokens"], None),
}


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # type: ignore[no-any-return]


def _peft(name: str, **kwargs: object) -> tuple[nn.Module, PeftModel]:
    build, targets, to_save = MODELS[name]
    base = build()
    config = LoraConfig(**({"r": 4, "target_modules": targets, "modules_to_save": to_save} | kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's fan_in_fan_out notice
        return base, get_peft_model(copy.deepcopy(base), config)


@pytest.mark.parametrize("name", MODELS)
def test_starts_as_the_base_model(name: str) -> None:
    base, model = _peft(name)
    ids = token_ids()
    assert torch.equal(_logits(model, ids), _logits(base, ids))


@pytest.mark.parametrize("name", MODELS)
def test_merged_equals_unmerged_and_unmerge_restores(name: str) -> None:
    base, model = _peft(name, init_lora_weights=False)
    ids = token_ids()
    unmerged = _logits(model, ids)
    assert not torch.allclose(unmerged, _logits(base, ids), atol=1e-3)
    model.merge_adapter()
    assert torch.allclose(_logits(model, ids), unmerged, atol=1e-4)
    model.unmerge_adapter()
    assert torch.allclose(_logits(model, ids), unmerged, atol=1e-5)
    with model.disable_adapter():
        assert torch.allclose(_logits(model, ids), _logits(base, ids), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_round_trip(name: str, tmp_path: Path) -> None:
    base, model = _peft(name, init_lora_weights=False)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ids = token_ids()
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss(name: str) -> None:
    _, model = _peft(name)
    model.eval()  # no dropout: the loss curve is deterministic
    ids = token_ids(batch=4, length=8)
    labels = ids if name != "bert" else torch.tensor([0, 1, 0, 1])
    losses = train(model, lambda: model(input_ids=ids, labels=labels).loss, steps=15, lr=2e-2)
    assert losses[-1] < losses[0] - 0.2  # nats: far beyond step-to-step noise


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_goes_through_the_adapters(name: str) -> None:
    _, model = _peft(name, init_lora_weights=False)
    ids = token_ids(batch=1, length=4)
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    ours = model.generate(input_ids=ids, **kwargs)
    assert ours.shape == (1, 9)
    merged = model.merge_and_unload()
    assert torch.equal(merged.generate(input_ids=ids, **kwargs), ours)


@pytest.mark.parametrize("name", MODELS)
def test_per_row_adapters_equal_each_row_alone(name: str) -> None:
    _, model = _peft(name, init_lora_weights=False)
    _, targets, _ = MODELS[name]
    model.add_adapter("other", LoraConfig(r=2, target_modules=targets[:1], init_lora_weights=False))
    ids = token_ids(batch=3)
    mixed = model(input_ids=ids, adapter_names=["other", "__base__", "default"]).logits.detach()
    alone = []
    for row, adapter in enumerate(["other", None, "default"]):
        if adapter is None:
            with model.disable_adapter():
                alone.append(_logits(model, ids[row : row + 1]))
        else:
            model.set_adapter(adapter)
            alone.append(_logits(model, ids[row : row + 1]))
    assert torch.allclose(mixed, torch.cat(alone), atol=1e-5)
