"""torch.compile of LoRA models: same numbers as eager, training works, adapter switches cost one compile.

Compiling is slow on small shared CPUs, so these tests are few: one with the default
inductor backend on a small model, one counting compiles (no code generation) on Llama.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import MLP, tiny_llama, token_ids
from support.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def _train(model: torch.nn.Module, params: list[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y)

    return train(model, loss, steps=3, lr=0.2, optimizer=torch.optim.SGD, params=params)


def test_inductor_matches_eager_forward_and_training() -> None:
    eager = get_peft_model(MLP(), LoraConfig(r=4, target_modules=["emb", "lin0", "lin1"], init_lora_weights=False))
    model = copy.deepcopy(eager)
    compiled = torch.compile(model)
    x = torch.arange(24).reshape(6, 4) % 20
    y = torch.arange(24) % 3
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    trainable = [p for p in model.parameters() if p.requires_grad]
    got = _train(compiled, trainable, x, y)
    expected = _train(eager, [p for p in eager.parameters() if p.requires_grad], x, y)
    assert got[-1] < got[0]
    assert got == pytest.approx(expected, abs=1e-5)
    for (name, param), reference in zip(model.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(param, reference, atol=1e-5, rtol=1e-5, msg=name)
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_switching_and_disabling_adapters_recompile_once_each_without_graph_breaks() -> None:
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_adapter("other", LoraConfig(r=2, target_modules=["q_proj", "o_proj"], init_lora_weights=False))
    backend = CompileCounter()
    compiled = torch.compile(model, backend=backend)
    ids = token_ids()

    def check(state: str, compiles: int) -> torch.Tensor:
        with torch.no_grad():
            expected = model(input_ids=ids).logits
            got = compiled(input_ids=ids).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=state)
        assert backend.frame_count == compiles, f"{state}: {backend.frame_count} compiles"
        return got

    default = check("default", 1)
    model.set_adapter("other")
    other = check("other", 2)
    assert not torch.allclose(other, default, atol=1e-3)
    model.set_adapter("default")
    check("default again: cached", 2)
    with model.disable_adapter():
        base = check("disabled", 3)
    assert not torch.allclose(base, default, atol=1e-3)
    check("enabled again: cached", 3)
    model.set_adapter(["default", "other"])
    check("both active", 4)
    model.merge_adapter()
    check("merged", 5)
    model.unmerge_adapter()
    check("unmerged: cached", 5)
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_a_compiled_peft_model_saves_and_loads(tmp_path: Path) -> None:
    base = MLP()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["lin0"], init_lora_weights=False))
    compiled = torch.compile(model, backend=CompileCounter())
    x = torch.arange(12).reshape(3, 4) % 20
    with torch.no_grad():
        out = compiled(x)
    compiled.save_pretrained(tmp_path)  # falls through to the PeftModel
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out, atol=1e-6, rtol=0)
