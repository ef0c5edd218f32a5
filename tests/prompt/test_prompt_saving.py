"""Saving from a state dict the caller gathered (the Trainer's way under DeepSpeed/FSDP):
a method whose saved form is computed (p-tuning's encoder output, a projected prefix)
computes it from the given values, not from the live tensors (which may be shards)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_core import AdapterLoadError, AdapterSaveError, get_peft_model, set_peft_model_state_dict
from peft_p_tuning import PromptEncoderConfig
from peft_prefix_tuning import PrefixTuningConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import tiny_bert, tiny_gpt2
from support.prompt_cases import add_noise

CONFIGS = {
    "p_mlp": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=8),
    "p_lstm": PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=8, encoder_reparameterization_type="LSTM"
    ),
    "prefix_projection": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True),
    "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_a_given_state_dict_is_what_is_saved_also_through_an_encoder(method: str, tmp_path: Path) -> None:
    model = get_peft_model(tiny_gpt2(), CONFIGS[method].model_copy())
    add_noise(model)
    model.save_pretrained(tmp_path / "live")
    model.save_pretrained(tmp_path / "given", state_dict=model.state_dict())
    live = load_file(tmp_path / "live" / "adapter_model.safetensors")
    given = load_file(tmp_path / "given" / "adapter_model.safetensors")
    assert live.keys() == given.keys() == {"prompt_embeddings"}
    assert torch.equal(live["prompt_embeddings"], given["prompt_embeddings"])
    # Other values than the live ones (as a gathered state dict holds, where the live tensors are shards):
    other = copy.deepcopy(model)
    add_noise(other, seed=3)
    model.save_pretrained(tmp_path / "other", state_dict=other.state_dict())
    other.save_pretrained(tmp_path / "expected")
    saved = load_file(tmp_path / "other" / "adapter_model.safetensors")["prompt_embeddings"]
    expected = load_file(tmp_path / "expected" / "adapter_model.safetensors")["prompt_embeddings"]
    assert not torch.equal(saved, live["prompt_embeddings"])
    torch.testing.assert_close(saved, expected, atol=1e-6, rtol=0)


def test_the_classifier_copy_is_taken_from_the_given_state_dict_too(tmp_path: Path) -> None:
    model = get_peft_model(tiny_bert(), PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    other = copy.deepcopy(model)
    add_noise(other)
    model.save_pretrained(tmp_path / "given", state_dict=other.state_dict())
    other.save_pretrained(tmp_path / "expected")
    saved = load_file(tmp_path / "given" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "expected" / "adapter_model.safetensors")
    assert saved.keys() == expected.keys()
    assert all(torch.allclose(saved[k], expected[k], atol=1e-6, rtol=0) for k in expected)


def test_a_state_dict_without_the_encoder_is_one_clear_error(tmp_path: Path) -> None:
    model = get_peft_model(tiny_gpt2(), CONFIGS["p_mlp"].model_copy())
    state = {k: v for k, v in model.state_dict().items() if "mlp_head" not in k}
    with pytest.raises(
        AdapterSaveError, match=r"lacks 6 tensors of adapter 'default' \(e.g. \['prompt_encoder.mlp_head"
    ):
        model.save_pretrained(tmp_path, state_dict=state)
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_a_checkpoint_cannot_be_loaded_into_an_encoder_it_was_computed_by(tmp_path: Path) -> None:
    """Resuming p-tuning training from a checkpoint would put the encoder's output where its input
    belongs (Hugging Face PEFT does so silently); the encoder's tensors are missing, and that is the error."""
    model = get_peft_model(tiny_gpt2(), CONFIGS["p_mlp"].model_copy())
    add_noise(model)
    model.save_pretrained(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterLoadError, match=r"missing:\s+prompt_encoder.mlp_head"):
        set_peft_model_state_dict(model, load_file(tmp_path / "adapter_model.safetensors"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
