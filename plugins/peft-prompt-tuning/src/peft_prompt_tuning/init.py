"""Where prompt tuning's virtual tokens start: ``prompt_tuning_init`` RANDOM, TEXT or SAMPLE_VOCAB.

TEXT and SAMPLE_VOCAB copy rows of the model's token embedding (its forward, so a scaled
embedding stays scaled): the tokens of ``prompt_tuning_init_text`` repeated or cut to the
number of virtual tokens, or tokens drawn uniformly from the vocabulary. As in Hugging
Face PEFT, the random draws happen in the same order (a fresh embedding first), so a seed
gives the same start in both libraries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import ConfigError
from peft_prompt_tuning.config import PromptTuningConfig


def _text_token_ids(config: PromptTuningConfig, count: int) -> list[int]:
    """The token ids of ``prompt_tuning_init_text``, repeated and cut to ``count``."""
    try:
        from transformers import AutoTokenizer  # optional: only TEXT init needs it
    except ImportError as exc:
        raise ConfigError(
            "prompt_tuning_init='TEXT' reads a tokenizer with transformers: pip install transformers "
            "(or peft-prompt-tuning[text-init])"
        ) from exc
    options: dict[str, Any] = dict(config.tokenizer_kwargs or {})
    options.pop("trust_remote_code", None)  # a config file must never make us run code
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **options)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the tokenizer {config.tokenizer_name_or_path!r} of prompt_tuning_init='TEXT': {exc}; "
            "set tokenizer_name_or_path to a folder holding the tokenizer's files"
        ) from exc
    ids: list[int] = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
    if not ids:
        raise ConfigError(
            f"prompt_tuning_init_text={config.prompt_tuning_init_text!r} has no tokens; give a non-empty text"
        )
    return (ids * math.ceil(count / len(ids)))[:count]


def initial_rows(config: PromptTuningConfig, word_embeddings: nn.Module, count: int) -> Tensor | None:
    """The starting virtual tokens (count, width) in fp32, or None for RANDOM (keep the fresh rows)."""
    weight = getattr(word_embeddings, "weight", None)
    device = weight.device if isinstance(weight, Tensor) else None
    if config.prompt_tuning_init == "SAMPLE_VOCAB":
        vocab = getattr(word_embeddings, "num_embeddings", None) or (weight.shape[0] if weight is not None else None)
        if vocab is None:
            raise ConfigError("prompt_tuning_init='SAMPLE_VOCAB' needs the vocabulary size of the token embedding")
        ids = torch.randint(0, int(vocab), (count,), dtype=torch.long).to(device)
    elif config.prompt_tuning_init == "TEXT":
        ids = torch.tensor(_text_token_ids(config, count), dtype=torch.long, device=device)
    else:
        return None
    with torch.no_grad():
        rows: Tensor = word_embeddings(ids)
    return rows.detach().to(torch.float32)
