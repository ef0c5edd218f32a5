"""``ensure_weight_tying``: a head tied to the input embedding shares the embedding's LoRA factors
(transposed), in the incumbent's format and numbers both ways; the two stay one weight in training."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch

from peft_core import ConfigError, MergeError, PeftModel, get_peft_model
from peft_core import get_peft_model_state_dict as our_state_dict
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, loaded_by_the_other, outputs
from support.models import tiny_llama, token_ids
from support.training import train

TARGETS = [["embed_tokens", "lm_head", "q_proj"], ["embed_tokens"], ["lm_head", "q_proj"]]


def _both(targets: list[str], init: bool = True) -> tuple[PeftModel, peft.PeftModel]:
    base = tiny_llama(tie_word_embeddings=True)
    settings = {"r": 4, "target_modules": targets, "ensure_weight_tying": True, "init_lora_weights": init}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
        torch.manual_seed(0)
        ours = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))
    return ours, theirs


def _adapter_tensors(model: peft.PeftModel) -> dict[str, torch.Tensor]:
    """The incumbent's saved adapter tensors without the full embedding copies it adds (save_embedding_layers)."""
    return {k: v for k, v in peft.get_peft_model_state_dict(model).items() if ".base_layer." not in k}


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("targets", TARGETS[:2], ids=["both", "embedding"])
def test_same_seed_same_tied_factors_as_the_incumbent(targets: list[str], init: bool) -> None:
    ours, theirs = _both(targets, init)
    mine, expected = our_state_dict(ours), _adapter_tensors(theirs)
    assert mine.keys() == expected.keys() and "base_model.model.lm_head.lora_A.weight" in mine
    assert [k for k in expected if not torch.equal(mine[k], expected[k])] == []
    head = ours.base_model.model.lm_head
    assert (
        head.lora_factors("default")[0].data_ptr()
        == ours.base_model.model.model.embed_tokens.lora_embedding_B["default"].data_ptr()
    )


@pytest.mark.parametrize("targets", TARGETS, ids=["both", "embedding", "head"])
def test_adapters_load_both_ways_with_the_same_outputs(targets: list[str], tmp_path: Path) -> None:
    base = tiny_llama(tie_word_embeddings=True)
    x = token_ids(batch=2, length=8)
    for saver in ("hf", "ours"):
        ours, theirs = _both(targets, init=False)
        trained = theirs if saver == "hf" else ours
        add_noise(trained)
        trained.save_pretrained(tmp_path / saver)
        loaded = loaded_by_the_other(saver, base, tmp_path / saver)
        expected = outputs(trained.eval(), x)
        assert not torch.allclose(expected, outputs(base, x), atol=1e-3), "a void test"
        torch.testing.assert_close(outputs(loaded, x), expected, atol=ATOL, rtol=0)


def test_training_keeps_the_head_and_the_embedding_one_weight() -> None:
    ours, _ = _both(TARGETS[0], init=False)
    x = token_ids(batch=2, length=8)
    ours.train()
    train(ours, lambda: ours(input_ids=x, labels=x).loss, steps=3, lr=1e-2)
    embedding, head = ours.base_model.model.model.embed_tokens, ours.base_model.model.lm_head
    torch.testing.assert_close(head.delta_weight("default"), embedding.delta_weight("default"), atol=1e-6, rtol=0)
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad and ("embed" in n or "lm_head" in n)]
    assert len(trainable) == 2  # the embedding's two factors, nothing of the head's own


def test_merging_tied_weights_and_tied_copies_are_refused() -> None:
    ours, _ = _both(TARGETS[0])
    with pytest.raises(MergeError, match="shared with other modules"):
        ours.merge_adapter()
    with pytest.raises(ConfigError, match="ensure_weight_tying=True with tied embeddings in modules_to_save"):
        get_peft_model(
            tiny_llama(tie_word_embeddings=True),
            LoraConfig(target_modules=["q_proj"], modules_to_save=["embed_tokens"], ensure_weight_tying=True),
        )
    with pytest.warns(UserWarning, match="no module shares the input embedding's weight"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["embed_tokens"], ensure_weight_tying=True))
    with pytest.raises(ConfigError, match="get different trainable_token_indices"):
        get_peft_model(
            tiny_llama(tie_word_embeddings=True),
            LoraConfig(
                target_modules=["q_proj"],
                trainable_token_indices={"embed_tokens": [1], "lm_head": [2]},
                ensure_weight_tying=True,
            ),
        )
