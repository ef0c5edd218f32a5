"""The prompt-learning matrix: methods x task types, each as a Hugging Face PEFT config and ours.

Every case builds a small random transformers model of its task, a config of one method
in both libraries (same field names), and the inputs the task takes.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peft
import torch
from torch import Tensor, nn

import peft_core
from support.models import lively, tiny_bart, tiny_bert, tiny_bert_for, tiny_gpt2, tiny_llama, tiny_t5, token_ids

ATOL = 1e-5  # fp32
VIRTUAL = 3

#: method -> (config class name, options), the same in both libraries.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "prompt": ("PromptTuningConfig", {}),
    "p_mlp": ("PromptEncoderConfig", {"encoder_hidden_size": 16}),
    "p_lstm": ("PromptEncoderConfig", {"encoder_hidden_size": 16, "encoder_reparameterization_type": "LSTM"}),
    "prefix": ("PrefixTuningConfig", {}),
    "prefix_proj": ("PrefixTuningConfig", {"prefix_projection": True, "encoder_hidden_size": 8}),
}

#: model -> (builder, task type)
MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "gpt2": (tiny_gpt2, "CAUSAL_LM"),
    "llama": (tiny_llama, "CAUSAL_LM"),
    "bert": (tiny_bert, "SEQ_CLS"),
    "t5": (tiny_t5, "SEQ_2_SEQ_LM"),
    "bart": (tiny_bart, "SEQ_2_SEQ_LM"),
    "bert_token": (lambda: tiny_bert_for("token"), "TOKEN_CLS"),
    "bert_qa": (lambda: tiny_bert_for("qa"), "QUESTION_ANS"),
    "bert_features": (lambda: tiny_bert_for("none"), "FEATURE_EXTRACTION"),
}
GENERATIVE = ("CAUSAL_LM", "SEQ_2_SEQ_LM")


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.method}"

    @property
    def task(self) -> str:
        return MODELS[self.model][1]

    def base(self, generation: bool = False) -> nn.Module:
        model = MODELS[self.model][0]()
        return lively(model).eval() if generation else model

    def _options(self) -> dict[str, Any]:
        options = METHODS[self.method][1]
        return {"task_type": self.task, "num_virtual_tokens": VIRTUAL, **options, **self.options}

    def ours(self) -> peft_core.PeftConfig:
        config_class: type[peft_core.PeftConfig] = getattr(peft_core, METHODS[self.method][0])
        return config_class(**self._options())

    def theirs(self) -> peft.PeftConfig:
        config: peft.PeftConfig = getattr(peft, METHODS[self.method][0])(**self._options())
        return config

    def inputs(self) -> dict[str, Tensor]:
        """A left-padded batch of 2 (row 0 has 2 padding positions), with the task's extra inputs."""
        ids = token_ids(batch=2, length=7)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.task == "SEQ_2_SEQ_LM":
            inputs["decoder_input_ids"] = token_ids(batch=2, length=4, seed=1)
        return inputs


CASES = [Case(model, method) for model in MODELS for method in METHODS]


@torch.no_grad()
def outputs(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """Every tensor output (logits, start/end logits, hidden states), flat; the KV cache left out."""
    result = model(**inputs)
    return torch.cat([v.flatten() for k, v in result.items() if isinstance(v, Tensor) and k != "past_key_values"])


@torch.no_grad()
def add_noise(model: nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Move every trainable tensor (virtual tokens, encoder heads, classifier copies) away from its init."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(scale * torch.randn(param.shape, generator=generator))


def hf_model(base: nn.Module, config: peft.PeftConfig, adapter_name: str = "default") -> peft.PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(copy.deepcopy(base), config, adapter_name=adapter_name)


def generation_inputs(case: Case) -> dict[str, Any]:
    """Greedy decoding of 16 new tokens (the end-of-sequence token suppressed, so every row runs to length)."""
    inputs = {k: v for k, v in case.inputs().items() if not k.startswith("decoder_")}
    return inputs | {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False, "pad_token_id": 0}
