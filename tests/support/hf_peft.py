"""Building the same adapter with Hugging Face PEFT and with peft-core, and comparing outputs.

Adapters get non-trivial weights (``init_lora_weights=False``, ``init_ia3_weights=False``,
``init_weights=False``) and every other trainable tensor (biases, modules_to_save copies) gets noise, so a
tensor that is not carried over changes the outputs.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch
from torch import Tensor, nn

from peft_core import PeftConfig, PeftModel
from peft_ia3 import IA3Config
from peft_loha import LoHaConfig
from peft_lokr import LoKrConfig
from peft_lora import LoraConfig
from peft_oft import OFTConfig
from support.models import ConvMix, ConvNet, tiny_bert, tiny_gpt2, tiny_llama, token_ids

ATOL = 1e-5  # fp32

BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "gpt2": tiny_gpt2,
    "bert": tiny_bert,
    "llama": tiny_llama,
    "llama_tied": lambda: tiny_llama(tie_word_embeddings=True),
    "convnet": lambda: ConvNet().eval(),
    "convmix": lambda: ConvMix().eval(),
}


def inputs_for(model_name: str) -> Tensor:
    if model_name in ("convnet", "convmix"):
        return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return token_ids(batch=2, length=8)


#: Per method: our config class, Hugging Face PEFT's config class name, the options every case gets.
METHODS: dict[str, tuple[type[PeftConfig], str, dict[str, Any]]] = {
    "lora": (LoraConfig, "LoraConfig", {"r": 4, "lora_alpha": 8, "init_lora_weights": False}),
    "ia3": (IA3Config, "IA3Config", {"init_ia3_weights": False}),
    "loha": (LoHaConfig, "LoHaConfig", {"r": 4, "alpha": 8, "init_weights": False}),
    "lokr": (LoKrConfig, "LoKrConfig", {"r": 4, "alpha": 8, "init_weights": False}),
    "oft": (OFTConfig, "OFTConfig", {"init_weights": False}),
}


@dataclass(frozen=True)
class Case:
    """One matrix cell: a model and an adapter config (Hugging Face PEFT field names)."""

    model: str
    method: str  # a key of METHODS
    feature: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.method}-{self.feature}"

    def ours(self) -> PeftConfig:
        config_class, _, defaults = METHODS[self.method]
        return config_class(**(defaults | self.options))

    def theirs(self) -> peft.PeftConfig:
        _, class_name, defaults = METHODS[self.method]
        config: peft.PeftConfig = getattr(peft, class_name)(**(defaults | self.options))
        return config


def base_model(case_or_name: Case | str) -> nn.Module:
    name = case_or_name.model if isinstance(case_or_name, Case) else case_or_name
    return BUILDERS[name]()


@torch.no_grad()
def outputs(model: nn.Module, x: Tensor) -> Tensor:
    """The output tensor; for transformers models the logits and the last hidden state, flat.

    (Tiny BERT's classifier logits are ~1e-3; its hidden states are ~1.)
    """
    if x.is_floating_point():
        result: Tensor = model(x)
        return result
    out = model(input_ids=x, output_hidden_states=True)
    return torch.cat([out.logits.flatten(), out.hidden_states[-1].flatten()])


def disabled(model: nn.Module) -> AbstractContextManager[None]:
    """Adapters off, for either library's PeftModel."""
    context: AbstractContextManager[None] = model.disable_adapter()  # type: ignore[operator]
    return context


@torch.no_grad()
def add_noise(model: nn.Module, seed: int = 1) -> None:
    """Perturb every trainable tensor: adapters, trained biases, modules_to_save copies."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def hf_model(base: nn.Module, config: peft.PeftConfig, adapter_name: str = "default") -> peft.PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices, "already has LoRA" etc.
        return peft.get_peft_model(copy.deepcopy(base), config, adapter_name=adapter_name)


def hf_load(base: nn.Module, directory: object, adapter_name: str = "default") -> peft.PeftModel:
    """Hugging Face PEFT's ``from_pretrained``; its "missing adapter keys" warning fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(copy.deepcopy(base), directory, adapter_name=adapter_name)
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    assert not missing, missing
    return model


def loaded_by_the_other(saver: str, base: nn.Module, directory: Path) -> nn.Module:
    """The adapter that ``saver`` ("hf" or "ours") wrote to ``directory``, loaded into a copy of
    ``base`` by the other library, for inference (its notices silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if saver == "hf":
            return PeftModel.from_pretrained(copy.deepcopy(base), directory)
        return peft.PeftModel.from_pretrained(copy.deepcopy(base), directory).eval()


def our_model(base: nn.Module, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    from peft_core import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notice on GPT-2
        return get_peft_model(copy.deepcopy(base), config, adapter_name=adapter_name)


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, base: nn.Module, x: Tensor) -> None:
    """Equal outputs with adapters on (and different from the base model), and with them off."""
    expected = outputs(theirs, x)
    assert not torch.allclose(expected, outputs(base, x), atol=1e-3), "the adapter changes nothing: a void test"
    torch.testing.assert_close(outputs(ours, x), expected, atol=ATOL, rtol=0)
    with disabled(ours), disabled(theirs):
        torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)


def saved_by_hf(case: Case, directory: Path, is_trainable: bool = False) -> tuple[nn.Module, peft.PeftModel, PeftModel]:
    """The base model, a noisy Hugging Face PEFT adapter for ``case`` saved in ``directory``, ours loaded from it."""
    base = base_model(case)
    theirs = hf_model(base, case.theirs())
    add_noise(theirs)
    theirs.save_pretrained(directory)
    return base, theirs, PeftModel.from_pretrained(copy.deepcopy(base), directory, is_trainable=is_trainable)
