"""Run a code example from Hugging Face PEFT's documentation with either library.

``run(source, "peft")`` executes the snippet as the incumbent's docs write it;
``run(source, "peft_core")`` executes it with only its imports changed
(``from peft... import`` -> ``from peft_core import``). Both start from the same seed, so
their results can be compared number for number. Hub downloads in the docs are replaced
by the small offline models below (each snippet says what the docs load).
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from typing import Any

import torch
from torch import nn

from support.models import tiny_bert, tiny_llama, token_ids

LIBRARIES = ("peft", "peft_core")
_IMPORT = re.compile(r"^(\s*)from peft(\.[\w.]+)? import", flags=re.MULTILINE)


def ported(source: str) -> str:
    """The snippet with its ``peft`` imports pointed at ``peft_core`` and nothing else changed."""
    return _IMPORT.sub(r"\1from peft_core import", source)


def run(source: str, library: str, seed: int = 0, **given: Any) -> dict[str, Any]:
    """Execute a snippet; returns its variables, with what it printed as ``_stdout``."""
    code = textwrap.dedent(source)
    if library == "peft_core":
        code = ported(code)
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, **HELPERS, **given}
    torch.manual_seed(seed)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"<{library} snippet>", "exec"), namespace)
    namespace["_stdout"] = out.getvalue()
    return namespace


def both(source: str, seed: int = 0, **given: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The snippet run with the incumbent, then with peft-core (the same seed and inputs)."""
    return run(source, "peft", seed, **given), run(source, "peft_core", seed, **given)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tiny_t5(seed: int = 0) -> nn.Module:
    """A random T5 encoder-decoder (stands in for google/flan-t5-small)."""
    from transformers import T5Config, T5Model

    torch.manual_seed(seed)
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    return T5Model(config).eval()


class MLP(nn.Module):
    """The custom-models guide's multilayer perceptron, as written there."""

    def __init__(self, num_units_hidden: int = 2000) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.Linear(20, num_units_hidden),
            nn.ReLU(),
            nn.Linear(num_units_hidden, num_units_hidden),
            nn.ReLU(),
            nn.Linear(num_units_hidden, 2),
            nn.LogSoftmax(dim=-1),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803 (the guide's name)
        return self.seq(X)


class DummyModel(nn.Module):
    """The low-level API guide's model, as written there."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 10)
        self.linear = nn.Linear(10, 10)
        self.lm_head = nn.Linear(10, 10)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.linear(self.embedding(input_ids)))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(width, 2 * width)
        self.mlp.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class TimmLike(nn.Module):
    """Stands in for the guide's timm poolformer: ``blocks.N.mlp.fc1/fc2`` and ``head.fc``."""

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(8, width)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.head = nn.Module()
        self.head.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.fc(self.blocks(self.stem(x)))


HELPERS: dict[str, Any] = {
    "tiny_llama": tiny_llama,
    "tiny_bert": tiny_bert,
    "tiny_t5": tiny_t5,
    "token_ids": token_ids,
    "MLP": MLP,
    "DummyModel": DummyModel,
    "TimmLike": TimmLike,
}
