"""``trainable_token_indices``: a few embedding rows trained beside LoRA, in the incumbent's format and numbers
both ways, the tied output head following the embedding; merging exact where the weight is not shared."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from torch import nn

from peft_core import ConfigError, MergeError, TargetNotFoundError, get_peft_model
from peft_core import get_peft_model_state_dict as our_state_dict
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, disabled, loaded_by_the_other, outputs
from support.models import tiny_llama, token_ids
from support.training import train

TOKENS = [1, 5, 9]
SETTINGS: dict[str, Any] = {"r": 4, "target_modules": ["q_proj"], "init_lora_weights": False}


def _both(base: nn.Module, **extra: Any) -> tuple[nn.Module, nn.Module]:
    settings = SETTINGS | {"trainable_token_indices": TOKENS} | extra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
        torch.manual_seed(0)
        ours = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))
    return ours, theirs


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("form", ["list", "dict"])
def test_same_tensors_and_keys_as_the_incumbent(tied: bool, form: str) -> None:
    base = tiny_llama(tie_word_embeddings=tied)
    indices: Any = TOKENS if form == "list" else {"embed_tokens": TOKENS}
    ours, theirs = _both(base, trainable_token_indices=indices)
    mine, expected = our_state_dict(ours), peft.get_peft_model_state_dict(theirs)
    assert mine.keys() == expected.keys()
    assert "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta" in mine
    assert [k for k in expected if not torch.equal(mine[k], expected[k])] == []


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_adapters_load_both_ways_with_the_same_outputs(tied: bool, tmp_path: Path) -> None:
    base = tiny_llama(tie_word_embeddings=tied)
    x = token_ids(batch=2, length=8)
    for saver in ("hf", "ours"):
        ours, theirs = _both(base)
        trained = theirs if saver == "hf" else ours
        add_noise(trained)
        trained.save_pretrained(tmp_path / saver)
        loaded = loaded_by_the_other(saver, base, tmp_path / saver)
        expected = outputs(trained, x)
        assert not torch.allclose(expected, outputs(base, x), atol=1e-3), "a void test"
        torch.testing.assert_close(outputs(loaded, x), expected, atol=ATOL, rtol=0)
        with disabled(loaded), disabled(trained):
            torch.testing.assert_close(outputs(loaded, x), outputs(trained, x), atol=ATOL, rtol=0)


def test_the_tied_head_trains_through_the_same_table_as_the_incumbent() -> None:
    base = tiny_llama(tie_word_embeddings=True)
    x = token_ids(batch=2, length=8)
    x[:, ::2] = 5  # the trained tokens occur, as inputs and as labels
    logits = []
    for model in _both(base):
        model.train()
        train(model, lambda m=model: m(input_ids=x, labels=x).loss, steps=5, lr=1e-2)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert sum("trainable_tokens_delta" in n for n in trainable) == 1  # one table, shared with the head
        model.eval()
        logits.append(outputs(model, x))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=0)


def test_merging_writes_the_rows_and_unmerging_restores_them_exactly() -> None:
    base = tiny_llama()
    ours, _ = _both(base)
    add_noise(ours)
    x = token_ids(batch=2, length=8)
    expected = outputs(ours, x)
    embedding = ours.base_model.model.model.embed_tokens
    original = embedding.base_layer.weight.detach().clone()
    ours.merge_adapter()
    torch.testing.assert_close(outputs(ours, x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(embedding.base_layer.weight[TOKENS], embedding.trainable_tokens_delta["default"])
    ours.unmerge_adapter()
    assert torch.equal(embedding.base_layer.weight, original)
    torch.testing.assert_close(outputs(ours.merge_and_unload(), x), expected, atol=1e-5, rtol=0)


def test_tied_weights_are_not_merged_and_bad_requests_are_refused() -> None:
    tied, _ = _both(tiny_llama(tie_word_embeddings=True))
    with pytest.raises(MergeError, match="shared with other modules"):
        tied.merge_adapter()
    with pytest.raises(ConfigError, match="trainable_token_indices.*token ids >= 0"):
        LoraConfig(target_modules=["q_proj"], trainable_token_indices=[-1])
    model = tiny_llama()
    with pytest.raises(ConfigError, match="do not fit this layer's 64 tokens"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], trainable_token_indices=[3, 64]))
    with pytest.raises(TargetNotFoundError, match="trainable_token_indices"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], trainable_token_indices={"wte": [1]}))
    with pytest.raises(ConfigError, match="both targets and modules_to_save"):
        get_peft_model(
            model, LoraConfig(target_modules=["q_proj"], trainable_token_indices=[1], modules_to_save=["embed_tokens"])
        )
    assert not any("lora_" in n or "trainable_tokens" in n for n, _ in model.named_parameters())
