"""Generation with virtual tokens and prefixes, against greedy decoding by full forward passes.

The reference recomputes the whole sequence at every step (no cache), so it does not
depend on how a KV cache is continued: ``generate`` with and without a cache must give
its tokens. Prefix tuning also continues a cache it is given in a plain forward.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from torch import Tensor

from peft_core import PeftModel, get_peft_model
from peft_p_tuning import PromptEncoderConfig
from peft_prefix_tuning import PrefixTuningConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import lively, tiny_gpt2, tiny_llama, token_ids
from support.prompt_cases import add_noise

PROMPT = token_ids(batch=2, length=5)
CONFIGS = {
    "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "p_tuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=16),
    "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
}
BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def _greedy(model: PeftModel, prompt: Tensor, steps: int) -> Tensor:
    """Greedy decoding without a cache; token 0 (end of sequence) is never chosen, as min_new_tokens does."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids).logits[:, -1]
            logits[:, 0] = float("-inf")
            next_token = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_token], dim=1)
    return ids


@pytest.mark.parametrize("model_name", list(BUILDERS))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_generate_with_and_without_a_cache_is_greedy_decoding(method: str, model_name: str) -> None:
    model = get_peft_model(lively(BUILDERS[model_name]()), CONFIGS[method].model_copy())
    add_noise(model, scale=1.0)
    model.eval()
    expected = _greedy(model, PROMPT, steps=16)
    for use_cache in (True, False):
        generated = model.generate(
            input_ids=PROMPT, max_new_tokens=16, min_new_tokens=16, do_sample=False, use_cache=use_cache
        )
        assert torch.equal(generated, expected), f"use_cache={use_cache}"
    with model.disable_adapter():
        assert not torch.equal(model.generate(input_ids=PROMPT, max_new_tokens=16, min_new_tokens=16), expected)


@pytest.mark.incumbent
def test_hugging_face_peft_prefix_tuning_fails_to_generate_without_a_cache_on_llama() -> None:
    """Llama returns the cache it was given even with use_cache=False; the next step reuses it (the
    prefix and the whole sequence again) and the shapes no longer fit."""
    theirs = peft.get_peft_model(tiny_llama(), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    with pytest.raises(RuntimeError):
        theirs.generate(input_ids=PROMPT, max_new_tokens=4, do_sample=False, use_cache=False)


def test_a_forward_given_a_cache_that_holds_the_prefix_continues_it() -> None:
    model = get_peft_model(tiny_llama(), CONFIGS["prefix"].model_copy())
    add_noise(model)
    model.eval()
    ids = token_ids(batch=2, length=6)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :5], use_cache=True)
        assert first.past_key_values.get_seq_length() == 3 + 5
        step = model(input_ids=ids[:, 5:], past_key_values=first.past_key_values, attention_mask=torch.ones(2, 6))
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "config",
    [
        PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=8),
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True),
    ],
    ids=["p_tuning", "prefix_projection"],
)
def test_an_adapter_with_a_head_loaded_for_training_trains_its_saved_tokens_directly(
    config: PromptEncoderConfig | PrefixTuningConfig, tmp_path: Path
) -> None:
    """The checkpoint holds the head's output, not the head (as in Hugging Face PEFT, which refuses
    is_trainable=True for prompt learning): training goes on from those vectors, with a warning."""
    base = tiny_gpt2()
    model = get_peft_model(copy.deepcopy(base), config)
    add_noise(model)
    model.save_pretrained(tmp_path / "first")
    with pytest.warns(UserWarning, match="checkpoint holds the .* training continues on"):
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "first", is_trainable=True)
    adapter = loaded.base_model.adapter_module("default")
    assert [n for n, p in adapter.named_parameters() if p.requires_grad] == ["embedding.weight"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=PROMPT).logits, model(input_ids=PROMPT).logits, atol=1e-5, rtol=0)
    loaded(input_ids=PROMPT, labels=PROMPT).loss.backward()
    assert adapter.embedding.weight.grad is not None
    loaded.save_pretrained(tmp_path / "again")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "again")
    torch.testing.assert_close(again(input_ids=PROMPT).logits, loaded(input_ids=PROMPT).logits, atol=0, rtol=0)


def test_prefix_tuning_trains_an_encoder_decoder_model_from_labels_alone() -> None:
    """T5 makes its decoder inputs from the labels; the prefix's batch comes from the encoder input."""
    from support.models import tiny_t5

    model = get_peft_model(tiny_t5(), PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2))
    loss = model(input_ids=PROMPT, labels=PROMPT[:, :3].contiguous()).loss
    loss.backward()
    assert model.base_model.adapter_module("default").embedding.weight.grad is not None
    encoded = model.get_base_model().get_encoder()(input_ids=PROMPT)
    with torch.no_grad():
        from_encoder = model(encoder_outputs=encoded, labels=PROMPT[:, :3].contiguous()).loss
    torch.testing.assert_close(from_encoder, loss.detach(), atol=1e-6, rtol=0)
