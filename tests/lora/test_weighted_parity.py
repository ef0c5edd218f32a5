"""add_weighted_adapter gives Hugging Face PEFT's numbers for every combination_type, on the same
adapters at the same seed (DARE's random masks included), and IA3 adapters combine as there."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from torch import Tensor, nn

from peft_core import ConfigError, PeftModel
from peft_ia3 import IA3Config
from support.hf_peft import ATOL, add_noise, outputs
from support.models import MLP, ConvNet, tiny_gpt2, tiny_llama, token_ids

WEIGHTS = [0.7, -1.3]
MODELS: dict[str, tuple[Callable[[], nn.Module], list[str]]] = {
    "mlp": (MLP, ["emb", "lin0", "lin1"]),  # Embedding and Linear
    "gpt2": (tiny_gpt2, ["c_attn", "c_fc"]),  # Conv1D (fan_in_fan_out)
    "convnet": (lambda: ConvNet().eval(), ["conv1d", "conv2d"]),
}
FACTOR_RULES: list[tuple[str, dict[str, Any]]] = [
    ("linear", {}),
    ("ties", {"density": 0.5}),
    ("ties", {"density": 0.3, "majority_sign_method": "frequency"}),
    ("dare_linear", {"density": 0.6}),
    ("dare_ties", {"density": 0.5}),
    ("magnitude_prune", {"density": 0.4}),
]
SVD_RULES: list[tuple[str, dict[str, Any]]] = [
    ("svd", {"svd_rank": 3, "svd_clamp": 0.9}),
    ("ties_svd", {"density": 0.5}),
    ("dare_linear_svd", {"density": 0.6, "svd_rank": 5}),
    ("dare_ties_svd", {"density": 0.5, "majority_sign_method": "frequency"}),
    ("magnitude_prune_svd", {"density": 0.4}),
]
# The incumbent's SVD path handles Conv2d but not Conv1d: convolutions only for the factor rules.
CASES = [(m, kind, options) for m in MODELS for kind, options in FACTOR_RULES] + [
    (m, kind, options) for m in ("mlp", "gpt2") for kind, options in SVD_RULES
]


def _pair(model_name: str, tmp_path: Path) -> tuple[nn.Module, PeftModel, nn.Module]:
    """Base, ours and the incumbent's model with the same two LoRA adapters (ranks 4 and 4, other alphas)."""
    build, targets = MODELS[model_name]
    base = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices
        theirs = peft.get_peft_model(
            copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
        )
        theirs.add_adapter("b", peft.LoraConfig(r=4, lora_alpha=3, target_modules=targets[:2], init_lora_weights=False))
        add_noise(theirs)
        theirs.save_pretrained(tmp_path)
        ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
        ours.load_adapter(tmp_path / "b", "b")
    return base, ours, theirs.eval()


def _new_adapter(model: nn.Module, name: str) -> dict[str, Tensor]:
    suffix = f".{name}"
    return {
        key.replace(suffix, ""): value
        for key, value in model.state_dict().items()
        if suffix + "." in key or key.endswith(suffix)
    }


@pytest.mark.parametrize(("model_name", "kind", "options"), CASES, ids=[f"{m}-{k}-{len(o)}" for m, k, o in CASES])
def test_same_numbers_as_the_incumbent(model_name: str, kind: str, options: dict[str, Any], tmp_path: Path) -> None:
    base, ours, theirs = _pair(model_name, tmp_path)
    torch.manual_seed(0)
    theirs.add_weighted_adapter(["default", "b"], WEIGHTS, "mix", combination_type=kind, **options)
    torch.manual_seed(0)
    ours.add_weighted_adapter(["default", "b"], WEIGHTS, "mix", combination_type=kind, **options)
    mine, expected = _new_adapter(ours, "mix"), _new_adapter(theirs, "mix")
    assert mine.keys() == expected.keys() and mine
    exact = kind in dict(FACTOR_RULES)  # entry-wise rules: the same operations, bit for bit
    for key, value in expected.items():
        torch.testing.assert_close(mine[key], value, atol=0 if exact else 1e-5, rtol=0 if exact else 1e-4, msg=key)
    ours.set_adapter("mix")
    theirs.set_adapter("mix")
    x = _inputs(model_name)
    assert not torch.allclose(_run(theirs, x), _run(base, x), atol=1e-4), "a void test"
    torch.testing.assert_close(_run(ours, x), _run(theirs, x), atol=ATOL if exact else 1e-4, rtol=0)


def test_dare_leaves_the_random_stream_where_the_incumbent_does(tmp_path: Path) -> None:
    _, ours, theirs = _pair("mlp", tmp_path)
    torch.manual_seed(0)
    theirs.add_weighted_adapter(["default", "b"], WEIGHTS, "mix", combination_type="dare_ties", density=0.5)
    after_theirs = torch.rand(4)
    torch.manual_seed(0)
    ours.add_weighted_adapter(["default", "b"], WEIGHTS, "mix", combination_type="dare_ties", density=0.5)
    assert torch.equal(torch.rand(4), after_theirs)


def _run(model: nn.Module, x: Tensor) -> Tensor:
    if x.is_floating_point() or isinstance(getattr(model, "get_base_model", lambda: model)(), MLP):
        with torch.no_grad():
            result: Tensor = model(x)
        return result
    return outputs(model, x)


def _inputs(model_name: str) -> Tensor:
    if model_name == "mlp":
        return token_ids(batch=2, length=6, vocab=20)
    if model_name == "convnet":
        return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return token_ids(batch=2, length=8)


def test_ia3_adapters_combine_as_in_the_incumbent(tmp_path: Path) -> None:
    base = tiny_llama()
    settings = {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.IA3Config(init_ia3_weights=False, **settings))
        theirs.add_adapter("b", peft.IA3Config(target_modules=["k_proj"], init_ia3_weights=False))
        add_noise(theirs)
        theirs.save_pretrained(tmp_path)
        ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
        ours.load_adapter(tmp_path / "b", "b")
    theirs.add_weighted_adapter(["default", "b"], WEIGHTS, "mix")
    ours.add_weighted_adapter(["default", "b"], WEIGHTS, "mix")
    mine, expected = _new_adapter(ours, "mix"), _new_adapter(theirs, "mix")
    assert mine.keys() == expected.keys() and len(mine) == 6  # 2 layers x (k, v, down)
    for key, value in expected.items():
        torch.testing.assert_close(mine[key], value, atol=0, rtol=0, msg=key)
    ours.set_adapter("mix")
    theirs.set_adapter("mix")
    x = token_ids(batch=2, length=8)
    torch.testing.assert_close(outputs(ours, x), outputs(theirs, x), atol=ATOL, rtol=0)
    ours.save_pretrained(tmp_path / "ours", selected_adapters=["mix"])  # and it loads there with those outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours" / "mix")
    torch.testing.assert_close(outputs(reloaded, x), outputs(theirs, x), atol=ATOL, rtol=0)


def test_ia3_refuses_lora_combination_types_and_mixed_scaling_modes() -> None:
    from peft_core import get_peft_model

    model = get_peft_model(MLP(), IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"]))
    with pytest.raises(ConfigError, match="'cat' is not defined for IA3.*weighted sum"):
        model.add_weighted_adapter(["default"], [1.0], "mix", combination_type="cat")
    model.add_adapter("b", IA3Config(target_modules=["lin1"]))  # lin1 scales its output here
    with pytest.raises(ConfigError, match="'lin1' scales its input for some adapters and its output for others"):
        model.add_weighted_adapter(["default", "b"], [1.0, 1.0], "mix")
    assert list(model.peft_config) == ["default", "b"]
