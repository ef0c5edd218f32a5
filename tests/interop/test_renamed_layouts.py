"""An adapter saved for a model layout that transformers has since renamed loads, in both libraries.

transformers 5 moved Llava's language model from ``language_model.model.`` to
``model.language_model.``; adapters trained before carry the old keys. Like Hugging Face
PEFT, the load applies transformers' own renamings for the model (or a ``key_mapping``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peft_core import PeftModel
from peft_core.errors import AdapterLoadError

OLD, NEW = "base_model.model.language_model.model.", "base_model.model.model.language_model."


def _llava() -> nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    text = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    config = LlavaConfig(vision_config=vision, text_config={**text.to_dict(), "vocab_size": 64}, image_token_index=63)
    return LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def old_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, torch.Tensor, Path]:
    """An incumbent LoRA adapter on Llava, its keys rewritten to the layout of transformers 4."""
    base = _llava()
    theirs = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(target_modules=["q_proj"], init_lora_weights=False)
    )
    folder = tmp_path_factory.mktemp("old-layout")
    theirs.save_pretrained(folder)
    tensors = load_file(folder / "adapter_model.safetensors")
    assert any(k.startswith(NEW) for k in tensors)
    save_file({k.replace(NEW, OLD): v for k, v in tensors.items()}, folder / "adapter_model.safetensors")
    with torch.no_grad():
        expected = theirs(input_ids=IDS).logits
    return base, expected, folder


IDS = torch.randint(0, 60, (2, 6), generator=torch.Generator().manual_seed(0))


def test_an_adapter_of_a_renamed_layout_loads_with_the_same_outputs_in_both_libraries(
    old_layout: tuple[nn.Module, torch.Tensor, Path],
) -> None:
    base, expected, folder = old_layout
    ours = PeftModel.from_pretrained(copy.deepcopy(base), folder)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)


def test_an_explicit_key_mapping_replaces_the_models_own(old_layout: tuple[nn.Module, torch.Tensor, Path]) -> None:
    base, expected, folder = old_layout
    mapping = {r"^language_model\.model\.": "model.language_model."}
    ours = PeftModel.from_pretrained(copy.deepcopy(base), folder, key_mapping=mapping)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)
    with pytest.raises(AdapterLoadError, match="unexpected"):  # a mapping that does not fit is not guessed around
        PeftModel.from_pretrained(copy.deepcopy(base), folder, key_mapping={"^nothing": "x"})
