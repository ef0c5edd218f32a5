"""At one seed, a LoRA adapter starts with Hugging Face PEFT's values (every init, every layer type),
leaves the random stream where it does, and so trains to the same model; ``fast_init`` trades that
for speed with the same distributions."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import peft
import pytest
import torch
from torch import Tensor, nn

from peft_core import get_peft_model
from peft_lora import LoraConfig, fast_init
from support.hf_peft import ATOL
from support.models import ConvNet, tiny_gpt2, tiny_llama, token_ids
from support.training import train

MODELS: dict[str, tuple[Callable[[], nn.Module], list[str]]] = {
    "llama": (tiny_llama, ["q_proj", "v_proj", "down_proj", "embed_tokens"]),  # Linear and Embedding
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj"]),  # transformers Conv1D
    "convnet": (lambda: ConvNet().eval(), ["conv1d", "conv2d", "head"]),
}
# (model, init): the incumbent defines no PiSSA/OLoRA/orthogonal init for convolutions, nor OLoRA for Conv1D.
CASES = [
    (model, init)
    for model in MODELS
    for init in (True, False, "gaussian", "orthogonal", "pissa", "pissa_niter_2", "olora")
    if not (model == "convnet" and init not in (True, False, "gaussian")) and not (model == "gpt2" and init == "olora")
]


def _both(model_name: str, init: bool | str, dtype: torch.dtype, seed: int = 3) -> tuple[nn.Module, nn.Module]:
    build, targets = MODELS[model_name]
    base = build().to(dtype)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": targets, "init_lora_weights": init}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings))
        theirs_next = torch.rand(4)
        torch.manual_seed(seed)
        ours = get_peft_model(copy.deepcopy(base), LoraConfig(**settings))
        ours_next = torch.rand(4)
    assert torch.equal(ours_next, theirs_next), "the random stream continues elsewhere after the injection"
    return ours, theirs


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    """Every tensor (adapters and base weights) under the incumbent's names."""
    return {key.replace(".default", ""): value for key, value in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("model_name", "init"), CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_same_seed_same_adapter_and_base_as_the_incumbent(
    model_name: str, init: bool | str, dtype: torch.dtype
) -> None:
    ours, theirs = _both(model_name, init, dtype)
    mine, expected = _tensors(ours), _tensors(theirs)
    assert mine.keys() == expected.keys()
    different = [key for key in expected if not torch.equal(mine[key], expected[key])]
    assert different == []
    adapters = [value for key, value in mine.items() if "lora_" in key]
    assert adapters and any(t.abs().sum() > 0 for t in adapters), "a void comparison"


def test_same_seed_same_logits_after_training_with_dropout() -> None:
    x = token_ids(batch=2, length=8)
    logits = []
    for library in (peft, None):
        torch.manual_seed(0)
        settings = {
            "r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.1,
            "target_modules": ["q_proj", "v_proj", "embed_tokens"],
        }
        if library is peft:
            model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**settings))
        else:
            model = get_peft_model(tiny_llama(), LoraConfig(**settings))
        model.train()
        losses = train(model, lambda m=model: m(input_ids=x, labels=x).loss, steps=10, lr=1e-2)
        assert losses[-1] < losses[0] - 0.1  # it trained
        model.eval()
        with torch.no_grad():
            logits.append(model(input_ids=x).logits)
    torch.testing.assert_close(logits[0], logits[1], atol=ATOL, rtol=0)


def test_fast_init_draws_each_factor_once_with_the_same_distribution() -> None:
    base = tiny_llama()
    config = LoraConfig(r=8, target_modules=["q_proj", "embed_tokens"])
    torch.manual_seed(0)
    incumbent_like = get_peft_model(copy.deepcopy(base), config)
    torch.manual_seed(0)
    with fast_init():
        fast = get_peft_model(copy.deepcopy(base), config)
    a_slow = incumbent_like.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    layer = fast.base_model.model.model.layers[0].self_attn.q_proj
    a_fast, b_fast = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert not torch.equal(a_fast, a_slow)  # other values...
    bound = 1 / math.sqrt(a_fast.shape[1])  # ...from the same Kaiming-uniform law, B zero
    assert a_fast.abs().max() <= bound and a_fast.abs().max() > 0.9 * bound
    assert abs(float(a_fast.std()) - bound / math.sqrt(3)) < 0.1 * bound
    assert torch.count_nonzero(b_fast) == 0
    embedding = fast.base_model.model.model.embed_tokens
    assert torch.count_nonzero(embedding.lora_embedding_A["default"]) == 0
    assert abs(float(embedding.lora_embedding_B["default"].std()) - 1) < 0.3
    x = token_ids(batch=2, length=8)
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=x).logits, base(input_ids=x).logits, atol=ATOL, rtol=0)
