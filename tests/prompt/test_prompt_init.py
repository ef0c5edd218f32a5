"""Where prompt tuning's virtual tokens start (RANDOM, TEXT, SAMPLE_VOCAB), as in Hugging Face PEFT.

TEXT reads a tokenizer from a local folder (a word-level tokenizer over the tiny model's
64-token vocabulary, built here offline). With one seed both libraries draw the same
starting rows; a loaded adapter never needs the tokenizer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

from peft_core import ConfigError, PeftModel, get_peft_model
from peft_prompt_tuning import PromptTuningConfig, PromptTuningInit
from support.models import tiny_gpt2, tiny_t5
from support.prompt_cases import hf_model


def _word_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer: word ``w<i>`` is token ``i`` (i < 64), saved as transformers saves one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(63)} | {"[UNK]": 63}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)
    return folder


def _tokens(model: nn.Module) -> torch.Tensor:
    weight = model.base_model.adapter_module("default").embedding.weight  # type: ignore[union-attr, operator]
    assert isinstance(weight, torch.Tensor)
    return weight.detach()


def test_text_init_starts_from_the_texts_token_embeddings_repeated_to_length(tmp_path: Path) -> None:
    folder = _word_tokenizer(tmp_path / "tokenizer")
    base = tiny_gpt2()
    options = {
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": 5,
        "prompt_tuning_init": "TEXT",
        "prompt_tuning_init_text": "w3 w10",
        "tokenizer_name_or_path": str(folder),
    }
    model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(**options))
    words = base.get_input_embeddings().weight
    assert torch.equal(_tokens(model), words[[3, 10, 3, 10, 3]])
    theirs = hf_model(base, peft.PromptTuningConfig(**options))
    assert torch.equal(_tokens(model), theirs.prompt_encoder.default.embedding.weight.detach())


def test_text_init_cuts_a_long_text_and_doubles_for_encoder_decoder_models(tmp_path: Path) -> None:
    folder = _word_tokenizer(tmp_path / "tokenizer")
    base = tiny_t5()
    config = PromptTuningConfig(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=2,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text="w1 w2 w3 w4 w5 w6",
        tokenizer_name_or_path=str(folder),
    )
    model = get_peft_model(copy.deepcopy(base), config)
    assert torch.equal(_tokens(model), base.get_input_embeddings().weight[[1, 2, 3, 4]])  # 2 x 2 virtual tokens


@pytest.mark.parametrize("init", ["RANDOM", "SAMPLE_VOCAB"])
def test_random_and_sampled_starts_draw_what_hugging_face_peft_draws_for_one_seed(init: str) -> None:
    base = tiny_gpt2()
    options = {"task_type": "CAUSAL_LM", "num_virtual_tokens": 6, "prompt_tuning_init": init}
    torch.manual_seed(7)
    ours = _tokens(get_peft_model(copy.deepcopy(base), PromptTuningConfig(**options)))
    torch.manual_seed(7)
    theirs = hf_model(base, peft.PromptTuningConfig(**options)).prompt_encoder.default.embedding.weight.detach()
    assert torch.equal(ours, theirs)
    if init == "SAMPLE_VOCAB":  # every row is a row of the vocabulary
        words = base.get_input_embeddings().weight
        assert all(any(torch.equal(row, word) for word in words) for row in ours)


def test_a_text_init_adapter_loads_without_its_tokenizer(tmp_path: Path) -> None:
    folder = _word_tokenizer(tmp_path / "tokenizer")
    base = tiny_gpt2()
    config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=3,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="w5",
        tokenizer_name_or_path=str(folder),
    )
    model = get_peft_model(copy.deepcopy(base), config)
    model.save_pretrained(tmp_path / "adapter")
    for path in folder.iterdir():
        path.unlink()
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter", is_trainable=True)
    assert torch.equal(_tokens(loaded), _tokens(model))


def test_a_tokenizer_that_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=3,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="hello",
        tokenizer_name_or_path=str(tmp_path / "no-tokenizer-here"),
    )
    with pytest.raises(ConfigError, match="cannot load the tokenizer .* set tokenizer_name_or_path to a folder"):
        get_peft_model(tiny_gpt2(), config)
