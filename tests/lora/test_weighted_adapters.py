"""add_weighted_adapter: "cat" and full-rank "svd" are exact, truncated "svd" is the best
low-rank approximation, "linear" combines factors (exact for one adapter)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from peft_core import ConfigError, PeftError, PeftModel, get_peft_model
from peft_core.contract import Capabilities
from peft_lora import Linear, LoraConfig, LoraLayer
from support.models import MLP, ConvNet, tiny_gpt2, token_ids

WEIGHTS = (0.7, -1.3)


def _two_adapters(model: nn.Module, targets: list[str], second_targets: list[str] | None = None) -> PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's fan_in_fan_out notice
        peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=3, target_modules=targets, init_lora_weights=False))
        second = LoraConfig(r=3, lora_alpha=2, use_rslora=True, target_modules=second_targets or targets)
        peft.add_adapter("b", second.model_copy(update={"init_lora_weights": False}))
    return peft.eval()


def _lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLayer)}


def _expected_delta(layer: LoraLayer, weights: tuple[float, ...] = WEIGHTS) -> Tensor:
    present = [(a, w) for a, w in zip(("default", "b"), weights, strict=True) if a in layer.adapter_configs]
    return sum(w * layer.delta_weight(a) for a, w in present)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("build", "targets"),
    [(MLP, ["emb", "lin0", "lin1", "head"]), (ConvNet, ["conv1d", "conv2d", "head"]), (tiny_gpt2, ["c_attn", "c_fc"])],
)
def test_cat_is_exact_on_every_layer_type(build: type[nn.Module], targets: list[str]) -> None:
    model = _two_adapters(build(), targets)
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "mix", combination_type="cat")
    for path, layer in _lora_layers(model).items():
        assert layer.r.get("mix") == 5, path  # rank = 2 + 3
        assert torch.allclose(layer.delta_weight("mix"), _expected_delta(layer), atol=1e-6), path


def test_cat_outputs_equal_the_weighted_adapters_run_together() -> None:
    model = _two_adapters(MLP(), ["emb", "lin0", "lin1"])
    reference = copy.deepcopy(model)
    for layer in _lora_layers(reference).values():
        with torch.no_grad():
            for name, weight in zip(("default", "b"), WEIGHTS, strict=True):
                layer.lora_factors(name)[1].mul_(weight)  # scale B: the update scales with it
    reference.set_adapter(["default", "b"])
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "mix", combination_type="cat")
    model.set_adapter("mix")
    batch = token_ids(batch=3, length=4, vocab=20)
    with torch.no_grad():
        assert torch.allclose(model(batch), reference(batch), atol=1e-5)


def test_full_rank_svd_is_exact_and_truncated_svd_is_the_best_approximation() -> None:
    model = _two_adapters(MLP(), ["lin0", "lin1"])
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "full", combination_type="svd", svd_rank=5)
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "low", combination_type="svd", svd_rank=2)
    for path, layer in _lora_layers(model).items():
        target = _expected_delta(layer)
        assert torch.allclose(layer.delta_weight("full"), target, atol=1e-5), path
        u, s, vh = torch.linalg.svd(target)
        best = (u[:, :2] * s[:2]) @ vh[:2]
        assert torch.allclose(layer.delta_weight("low"), best, atol=1e-5), path
        error = torch.linalg.matrix_norm(layer.delta_weight("low") - target)
        assert torch.isclose(error, s[2:].square().sum().sqrt(), atol=1e-5), path  # the dropped singular values


def test_svd_rank_defaults_to_the_largest_rank() -> None:
    model = _two_adapters(MLP(), ["lin0"])
    model.add_weighted_adapter(["default", "b"], [1.0, 1.0], "mix")  # combination_type="svd" by default
    assert model.base_model.model.lin0.r["mix"] == 3
    assert model.peft_config["mix"].r == 3


def test_linear_is_exact_for_one_adapter_and_has_cross_terms_for_two() -> None:
    model = _two_adapters(MLP(), ["lin0"])
    model.add_adapter("c", LoraConfig(r=2, lora_alpha=5, target_modules=["lin0"], init_lora_weights=False))
    model.add_weighted_adapter(["default"], [-0.4], "one", combination_type="linear")
    model.add_weighted_adapter(["default", "c"], [0.5, 2.0], "two", combination_type="linear")
    layer = model.base_model.model.lin0
    assert torch.allclose(layer.delta_weight("one"), -0.4 * layer.delta_weight("default"), atol=1e-6)
    factors = {n: [t.detach() for t in layer.lora_factors(n)] for n in ("default", "c")}
    c = {"default": 0.5 * layer.scaling["default"], "c": 2.0 * layer.scaling["c"]}
    new_b = sum(c[n] ** 0.5 * factors[n][1] for n in c)
    new_a = sum(c[n] ** 0.5 * factors[n][0] for n in c)
    assert torch.allclose(layer.delta_weight("two"), new_b @ new_a, atol=1e-6)  # cross terms included
    exact = 0.5 * layer.delta_weight("default") + 2.0 * layer.delta_weight("c")
    assert not torch.allclose(layer.delta_weight("two"), exact, atol=1e-3)


def test_linear_refuses_different_ranks() -> None:
    model = _two_adapters(MLP(), ["lin0"])
    with pytest.raises(
        ConfigError, match=r"'linear' combines the factors entry by entry and needs equal ranks.*'lin0'"
    ):
        model.add_weighted_adapter(["default", "b"], [1.0, 1.0], "mix", combination_type="linear")
    assert "mix" not in model.peft_config
    assert "mix" not in model.base_model.model.lin0.adapter_configs


def test_adapters_on_different_modules_combine_where_present(tmp_path: Path) -> None:
    model = _two_adapters(tiny_gpt2(), ["c_attn"], second_targets=["c_attn", "c_fc"])
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "mix", combination_type="cat")
    layers = _lora_layers(model)
    for path, layer in layers.items():
        assert layer.r["mix"] == (5 if path.endswith("c_attn") else 3), path
        assert torch.allclose(layer.delta_weight("mix"), _expected_delta(layer), atol=1e-6), path
    # The per-module ranks are in the saved config; Hugging Face PEFT loads it with the same outputs.
    import peft

    model.save_pretrained(tmp_path, selected_adapters=["mix"])
    model.set_adapter("mix")
    ids = token_ids()
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = peft.PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "mix")(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_combined_adapter_is_inactive_and_frozen() -> None:
    model = _two_adapters(MLP(), ["lin0"])
    model.add_weighted_adapter(["default", "b"], list(WEIGHTS), "mix", combination_type="cat")
    assert model.active_adapters == ["default"]
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".mix." in n)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adapters": ["nope"], "weights": [1.0]}, "unknown: \\['nope'\\]"),
        ({"adapters": ["default", "b"], "weights": [1.0]}, "one weight each"),
        ({"adapters": ["default"], "weights": [1.0], "adapter_name": "b"}, "'b' already exists"),
        ({"adapters": ["default"], "weights": [1.0], "combination_type": "tie"}, "'tie' is not supported"),
        ({"adapters": ["default"], "weights": [1.0], "combination_type": "ties"}, "pass density="),
        ({"adapters": ["default"], "weights": [1.0], "combination_type": "dare_ties", "density": 1.5}, "outside"),
        ({"adapters": ["default"], "weights": [1.0], "density": 0.5, "majority_sign_method": "x"}, "'total'"),
        ({"adapters": ["default"], "weights": [1.0], "svd_clamp": 2.0}, "quantile"),
        ({"adapters": ["default"], "weights": [1.0], "svd_rnk": 2}, "unknown options \\['svd_rnk'\\]"),
        ({"adapters": ["default"], "weights": [1.0], "svd_rank": 0}, "svd_rank must be > 0"),
    ],
)
def test_bad_requests_are_clear_errors_and_change_nothing(kwargs: dict[str, object], message: str) -> None:
    model = _two_adapters(MLP(), ["lin0"])
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(PeftError, match=message):
        model.add_weighted_adapter(**({"adapter_name": "mix"} | kwargs))  # type: ignore[arg-type]
    assert list(model.peft_config) == ["default", "b"]
    assert model.state_dict().keys() == before.keys()


def test_modules_to_save_cannot_be_combined() -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"], modules_to_save=["head"]))
    with pytest.raises(PeftError, match="modules_to_save.*cannot be combined"):
        model.add_weighted_adapter(["default"], [1.0], "mix", combination_type="cat")


def test_a_layer_that_does_not_declare_weighted_is_refused() -> None:
    class Unweighted(Linear):
        capabilities = Capabilities(mergeable=True)  # no "weighted"

    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"]))
    model.base_model.model.lin0.__class__ = Unweighted
    with pytest.raises(PeftError, match="adapters of Unweighted cannot be combined with add_weighted_adapter"):
        model.add_weighted_adapter(["default"], [1.0], "mix", combination_type="linear")
    assert list(model.peft_config) == ["default"]
