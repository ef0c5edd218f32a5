"""Helpers shared by the reliability tests: model snapshots, the incumbent, hypothesis settings."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import MLP

X = torch.arange(12).reshape(3, 4) % 20  # token ids for MLP
INCUMBENT_VERSION = "0.21.2"

# Deterministic and modest: CI runs on two shared cores.
PROPERTIES = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def incumbent() -> ModuleType:
    """Hugging Face PEFT, at the version whose behaviour docs/reliability.md records."""
    peft = pytest.importorskip("peft")
    if peft.__version__ != INCUMBENT_VERSION:
        pytest.skip(f"incumbent facts were recorded for peft {INCUMBENT_VERSION}, found {peft.__version__}")
    return peft


@dataclass
class Snapshot:
    """Everything a failed operation must leave as it was: module tree, tensors, flags, outputs."""

    types: list[tuple[str, str]]
    state: dict[str, torch.Tensor]
    grads: dict[str, bool]
    output: torch.Tensor | None

    @classmethod
    def of(cls, model: nn.Module, inputs: Any = None) -> Snapshot:
        output = None
        if inputs is not None:
            with torch.no_grad():
                output = _logits(model(inputs)).clone()
        return cls(
            [(n, type(m).__name__) for n, m in model.named_modules()],
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            output,
        )

    def assert_same(self, other: Snapshot) -> None:
        """Bit-identical (``torch.equal`` on every tensor, NaN-free models assumed)."""
        assert other.types == self.types
        assert other.grads == self.grads
        assert other.state.keys() == self.state.keys()
        changed = [k for k, v in self.state.items() if not torch.equal(v, other.state[k])]
        assert not changed, f"changed tensors: {changed}"
        if self.output is not None:
            assert other.output is not None and torch.equal(other.output, self.output)


def _logits(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def lora_mlp(**kwargs: Any) -> tuple[nn.Module, PeftModel]:
    """A base MLP and a PeftModel on a copy of it with a non-trivial LoRA adapter."""
    base = MLP()
    config = LoraConfig(**({"r": 4, "target_modules": ["lin0", "lin1"], "init_lora_weights": False} | kwargs))
    return base, get_peft_model(copy.deepcopy(base), config)
