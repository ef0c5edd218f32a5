"""AdaLoRA twins: the same adapter built and trained with Hugging Face PEFT and with peft-core.

Both get the same seed before construction (the same initial triplets), the same batch,
the same dropout masks (the seed is set before each forward) and the same optimizer, and
``update_and_allocate(step)`` is called where the incumbent's docs put it: after
``optimizer.step()``, before ``optimizer.zero_grad()``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import peft
import torch
from torch import Tensor, nn

from peft_adalora import AdaLoraConfig
from peft_core import PeftModel, get_peft_model
from support.models import tiny_gpt2, tiny_llama, token_ids

#: A schedule with every phase inside 30 steps: warm-up to step 4, pruning every 3rd step
#: up to step 21, the final pattern at step 22, fixed ranks after.
SCHEDULE: dict[str, Any] = {
    "init_r": 6,
    "target_r": 3,
    "tinit": 4,
    "tfinal": 8,
    "deltaT": 3,
    "total_step": 30,
    "lora_alpha": 16,
    "task_type": "CAUSAL_LM",  # the incumbent adds the regulariser only through a task model
}

TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"], "llama": ["q_proj", "v_proj", "o_proj", "down_proj"]}
BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def base(name: str) -> nn.Module:
    return BUILDERS[name]()


def options(name: str, **overrides: Any) -> dict[str, Any]:
    return SCHEDULE | {"target_modules": TARGETS[name]} | overrides


def twins(model: nn.Module, seed: int = 1, **config: Any) -> tuple[peft.PeftModel, PeftModel]:
    """Hugging Face PEFT's and our AdaLoRA model of copies of ``model``, from the same seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices on GPT-2
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(copy.deepcopy(model), peft.AdaLoraConfig(**config))
        torch.manual_seed(seed)
        ours = get_peft_model(copy.deepcopy(model), AdaLoraConfig(**config))
    return theirs, ours


@dataclass
class Trainer:
    """A plain AdaLoRA training loop on one model (AdamW, one fixed batch)."""

    model: nn.Module
    lr: float = 1e-2
    ids: Tensor = field(default_factory=lambda: token_ids(batch=4, length=16))
    step: int = 0

    def __post_init__(self) -> None:
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.lr)

    def train_step(self) -> float:
        torch.manual_seed(100 + self.step)  # the same dropout masks in both libraries
        loss: Tensor = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.model.base_model.update_and_allocate(self.step)
        self.optimizer.zero_grad()
        self.step += 1
        return float(loss.detach())


@torch.no_grad()
def logits(model: nn.Module, ids: Tensor) -> Tensor:
    """Eval-mode logits (no dropout); the model's mode is restored."""
    training = model.training
    model.eval()
    result: Tensor = model(input_ids=ids).logits
    model.train(training)
    return result


def pattern(model: nn.Module) -> dict[str, list[bool]] | None:
    """The default adapter's rank_pattern, keyed as saved (the incumbent keeps the adapter
    name in its keys until it saves)."""
    found = model.peft_config["default"].rank_pattern
    return None if found is None else {key.removesuffix(".default"): list(mask) for key, mask in found.items()}


def zero_triplets(model: nn.Module) -> dict[str, list[bool]]:
    """Per module: which entries of ``lora_E`` are exactly zero (the masked triplets)."""
    found = {}
    for name, param in model.named_parameters():
        if ".lora_E" in name:
            found[name.split(".lora_E")[0].removeprefix("base_model.model.")] = (param == 0).view(-1).tolist()
    return found
