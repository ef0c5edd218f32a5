"""Tied weights: adapters on a module whose weight is shared are found at injection; merging is refused.

Decision: a shared weight (tied embed_tokens/lm_head) is never written by a merge, since that
would change the other module too. The adapter trains, runs and saves unmerged as usual;
merge_adapter/merge_and_unload refuse up front, naming the tie and the way out (untie first).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from peft_core import MergeError, PeftModel, get_peft_model
from peft_lora import LoraConfig
from reliability.common import Snapshot, incumbent
from support.models import tiny_llama, token_ids
from support.training import train

IDS = token_ids()


def _tied_peft(targets: list[str], **kwargs: object) -> tuple[nn.Module, PeftModel]:
    base = tiny_llama(tie_word_embeddings=True)
    config = LoraConfig(target_modules=targets, init_lora_weights=False, **kwargs)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=r"tied weights: .*\(weight is also .*\)") as record:
        model = get_peft_model(copy.deepcopy(base), config)
    assert len([w for w in record if "tied" in str(w.message)]) == 1
    return base, model


@pytest.mark.parametrize(
    ("target", "other"), [("lm_head", "model.embed_tokens.weight"), ("embed_tokens", "lm_head.weight")]
)
def test_an_adapter_on_a_tied_weight_is_detected_at_injection(target: str, other: str) -> None:
    _, model = _tied_peft([target, "q_proj"])
    tied = model.get_base_model().get_submodule("lm_head" if target == "lm_head" else "model.embed_tokens")
    assert tied.shared_weights == {"weight": [other]}
    assert model.base_model.model.model.layers[0].self_attn.q_proj.shared_weights == {}


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_merging_into_a_tied_weight_is_refused_and_nothing_is_merged(target: str) -> None:
    _, model = _tied_peft([target, "q_proj"])
    before = Snapshot.of(model, IDS)
    with pytest.raises(MergeError, match=r"tied weights: 'weight' is also .*; merging would change those modules"):
        model.merge_adapter()
    with pytest.raises(MergeError, match="Keep the adapter unmerged, or untie the weights first"):
        model.merge_and_unload()
    before.assert_same(Snapshot.of(model, IDS))


def test_the_unmerged_adapter_trains_and_saves_without_touching_the_shared_weight(tmp_path: Path) -> None:
    base, model = _tied_peft(["lm_head"])
    embedding = model.get_base_model().model.embed_tokens.weight.clone()
    train(model, lambda: model(input_ids=IDS, labels=IDS).loss, steps=3, lr=0.1, optimizer=torch.optim.SGD)
    assert torch.equal(model.get_base_model().model.embed_tokens.weight, embedding)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits)


def test_a_tied_module_in_modules_to_save_cannot_be_unloaded_with_merge() -> None:
    _, model = _tied_peft(["q_proj"], modules_to_save=["lm_head"])
    model.merge_adapter()  # nothing is written into the shared weight: allowed
    model.unmerge_adapter()
    with pytest.raises(MergeError, match="unloading with merge would put the separately trained copy"):
        model.merge_and_unload()


def test_after_untying_explicitly_the_merge_works() -> None:
    base = tiny_llama(tie_word_embeddings=True)
    base.lm_head.weight = nn.Parameter(base.lm_head.weight.detach().clone())
    base.config.tie_word_embeddings = False
    embedding = base.model.embed_tokens.weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tie, no warning
        model = get_peft_model(base, LoraConfig(target_modules=["lm_head"], init_lora_weights=False))
    with torch.no_grad():
        unmerged = model(input_ids=IDS).logits
        merged = model.merge_and_unload()
        assert torch.allclose(merged(input_ids=IDS).logits, unmerged, atol=1e-4)
    assert torch.equal(merged.model.embed_tokens.weight, embedding)


@pytest.mark.incumbent
def test_incumbent_merges_an_lm_head_adapter_into_the_tied_embeddings() -> None:
    peft = incumbent()
    base = tiny_llama(tie_word_embeddings=True)
    embedding = base.model.embed_tokens.weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about "complications", then merges anyway
        model = peft.get_peft_model(base, peft.LoraConfig(target_modules=["lm_head"], init_lora_weights=False))
        merged = model.merge_and_unload()
    assert not torch.equal(merged.model.embed_tokens.weight, embedding)  # the input embeddings changed too
