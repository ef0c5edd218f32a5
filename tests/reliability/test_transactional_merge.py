"""Merging: every layer or none, rolled back bit for bit; exact unmerge; bf16 cycles; IA3 zeros.

Also proven in tests/core/test_peft_model.py: safe_merge refuses NaN before writing anything;
tests/ia3/test_ia3.py: IA3 merge with a zero entry is refused, merge_and_unload works.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import peft_lora.layer
from peft_core import MergeError, PeftModel, get_peft_model
from peft_core.contract import AdapterLayer
from peft_ia3 import IA3Config, IA3Layer
from peft_lora import LoraConfig
from reliability.common import Snapshot, X, incumbent, lora_mlp
from support.models import MLP, tiny_llama, token_ids

IDS = token_ids()


def _llama_bf16(config: LoraConfig | IA3Config) -> PeftModel:
    model = get_peft_model(tiny_llama().to(torch.bfloat16), config)
    with torch.no_grad():  # a trained-looking adapter: small, non-zero updates
        for name, param in model.named_parameters():
            if "lora_B" in name or "ia3_l" in name:
                param.copy_((1.0 if "ia3_l" in name else 0.0) + 0.02 * torch.randn_like(param))
    return model


def _layers(model: nn.Module) -> list[AdapterLayer]:
    return [m for m in model.modules() if isinstance(m, AdapterLayer)]


def _fail(*_: object) -> dict[str, torch.Tensor]:
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("method", ["lora", "ia3"])
@pytest.mark.parametrize("where", ["merged_weights", "unmerged_weights"])  # before / after layer k is written
@pytest.mark.parametrize("exact_unmerge", [True, False])
def test_a_failure_at_layer_k_rolls_back_every_layer_bit_for_bit(
    method: str, where: str, exact_unmerge: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = LoraConfig(target_modules="all-linear") if method == "lora" else IA3Config(target_modules="all-linear")
    model = _llama_bf16(config)
    layers = _layers(model)
    k = 9
    monkeypatch.setattr(layers[k], where, _fail)
    before = Snapshot.of(model, IDS)
    with pytest.raises(
        MergeError,
        match=r"merge failed at model\.layers\.\d\.\w+\.\w+ and was rolled back in every layer: injected failure",
    ):
        model.merge_adapter(exact_unmerge=exact_unmerge)
    before.assert_same(Snapshot.of(model, IDS))
    assert not any(layer.merged for layer in layers)


def _fail_once(calls: int, method: Callable[..., object]) -> Callable[..., object]:
    """``method``, raising at its ``calls + 1``-th call only (a transient failure, as an out-of-memory)."""
    count = [0]

    def failing(*args: object) -> object:
        count[0] += 1
        if count[0] == calls + 1:
            raise RuntimeError("injected failure")
        return method(*args)

    return failing


# merge_and_unload keeps no undo data (it is never unmerged): each layer adds its update in
# place (merge_in_place); on a failure the layers (and blocks of rows) written are taken back
# out, which restores their weights within one rounding step.
@pytest.mark.parametrize("where", ["merge_in_place", "inside_merge_in_place"])
def test_a_failing_merge_and_unload_leaves_the_peft_model_as_it_was(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _llama_bf16(LoraConfig(target_modules="all-linear"))
    layer = _layers(model)[-1]
    if where == "merge_in_place":
        monkeypatch.setattr(layer, "merge_in_place", _fail)
    else:  # part-way through the last layer: two blocks of its rows are already written
        monkeypatch.setattr(peft_lora.layer, "MERGE_BLOCK_VALUES", layer.base_layer.weight.shape[1])
        monkeypatch.setattr(layer, "delta_rows", _fail_once(2, layer.delta_rows))
    before = Snapshot.of(model, IDS)
    with pytest.raises(MergeError, match="rolled back.*injected failure"):
        model.merge_and_unload()
    after = Snapshot.of(model, IDS)
    assert after.types == before.types and after.grads == before.grads and after.state.keys() == before.state.keys()
    for key, value in before.state.items():  # one bf16 rounding step at the tensor's scale
        scale = float(value.float().abs().max()) if value.numel() else 0.0
        torch.testing.assert_close(after.state[key], value, rtol=0, atol=2**-7 * scale, msg=key)
    assert list(model.peft_config) == ["default"]
    assert not any(layer.merged for layer in _layers(model))


def test_a_failing_merge_and_unload_before_any_write_leaves_every_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _llama_bf16(LoraConfig(target_modules="all-linear"))
    monkeypatch.setattr(_layers(model)[0], "merge_in_place", _fail)
    before = Snapshot.of(model, IDS)
    with pytest.raises(MergeError, match="rolled back"):
        model.merge_and_unload()
    before.assert_same(Snapshot.of(model, IDS))


def test_merge_and_unload_writes_the_bits_of_merge_adapter() -> None:
    # In place and by blocks of rows, the same fp32 sum rounded once as the reversible merge.
    model = _llama_bf16(LoraConfig(target_modules="all-linear"))
    merged = copy.deepcopy(model)
    merged.merge_adapter()
    state = merged.get_base_model().state_dict()
    expected = {n.replace(".base_layer", ""): p for n, p in state.items() if ".lora_" not in n}
    unloaded = model.merge_and_unload().state_dict()
    assert unloaded.keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in unloaded.items())


@pytest.mark.incumbent
def test_incumbent_safe_merge_failing_part_way_leaves_earlier_layers_merged() -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False))
    with torch.no_grad():
        model.base_model.model.lin1.lora_B["default"].weight[0, 0] = float("nan")
    weight = model.base_model.model.lin0.base_layer.weight.clone()
    with pytest.raises(ValueError, match="NaNs detected"):
        model.merge_adapter(safe_merge=True)
    assert model.base_model.model.lin0.merged
    assert not torch.equal(model.base_model.model.lin0.base_layer.weight, weight)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}


def _cycles(model: nn.Module, merge: Callable[[], None], unmerge: Callable[[], None], n: int) -> list[dict]:
    states = []
    for _ in range(n):
        merge()
        unmerge()
        states.append(_weights(model))
    return states


def _ulp_bf16(x: torch.Tensor) -> torch.Tensor:
    """The spacing of bf16 numbers at |x| (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(x.float().abs().clamp_min(2**-126))) - 7)


def test_bf16_merge_unmerge_cycles_are_exact_and_within_one_ulp_without_residues() -> None:
    model = _llama_bf16(LoraConfig(target_modules="all-linear"))
    original = _weights(model)
    states = _cycles(model, model.merge_adapter, model.unmerge_adapter, 10)
    assert all(torch.equal(states[-1][n], w) for n, w in original.items())  # drift 0.0 after 10 cycles

    merged = {}
    model.merge_adapter()
    merged.update(_weights(model))
    model.unmerge_adapter()
    states = _cycles(model, lambda: model.merge_adapter(exact_unmerge=False), model.unmerge_adapter, 10)
    for name, weight in original.items():
        drift = (states[-1][name].float() - weight.float()).abs()
        bound = _ulp_bf16(torch.maximum(weight.float().abs(), merged[name].float().abs()))
        assert bool((drift <= bound).all()), name  # documented tolerance: one ulp of max(|W|, |W + dW|)
        assert torch.equal(states[-1][name], states[0][name])  # a fixed point after one cycle: no accumulation
    assert max((states[-1][n].float() - w.float()).abs().max().item() for n, w in original.items()) < 2e-3


@pytest.mark.incumbent
def test_incumbent_bf16_cycles_drift_ten_times_more() -> None:
    peft = incumbent()
    base = tiny_llama().to(torch.bfloat16)
    ours = get_peft_model(copy.deepcopy(base), LoraConfig(target_modules="all-linear", init_lora_weights=False))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(target_modules="all-linear"))
    theirs.load_state_dict(ours.state_dict())  # the same (random, fp32) adapter weights on both sides
    drifts = []
    for model, merge in ((theirs, theirs.merge_adapter), (ours, lambda: ours.merge_adapter(exact_unmerge=False))):
        original = _weights(model)
        _cycles(model, merge, model.unmerge_adapter, 10)
        drifts.append(max((p.float() - original[n].float()).abs().max().item() for n, p in _weights(model).items()))
    assert drifts[0] > 5e-3 and drifts[0] > 5 * drifts[1]  # measured: 1.03e-2 vs 9.8e-4 (and 0.0 when exact)


def test_the_merged_weight_is_the_fp32_sum_rounded_once() -> None:
    model = _llama_bf16(LoraConfig(target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = (layer.base_layer.weight.float() + layer.delta_weight("default")).to(torch.bfloat16)
    model.merge_adapter()
    assert torch.equal(layer.base_layer.weight, expected)


def test_ia3_unmerge_divides_by_the_vectors_of_the_merge_even_if_they_changed_since() -> None:
    # The merge hands its scales to the engine (merge state); the unmerge divides by those,
    # so a vector that gained a zero after the merge cannot corrupt the restored weights.
    model = get_peft_model(MLP(), IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"]))
    original = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer" in k}
    model.merge_adapter()
    with torch.no_grad():
        model.base_model.model.lin1.ia3_l["default"][0, 3] = 0.0
    model.unmerge_adapter()
    restored = model.get_base_model().state_dict()
    assert all(torch.equal(restored[k], v) for k, v in original.items())
    assert not any(layer.merged for layer in _layers(model))


@pytest.mark.incumbent
def test_incumbent_ia3_unmerge_with_a_zero_entry_is_silently_wrong() -> None:
    peft = incumbent()
    model = peft.get_peft_model(MLP(), peft.IA3Config(target_modules=["lin0"], feedforward_modules=[]))
    with torch.no_grad():
        model.base_model.model.lin0.ia3_l["default"][3] = 0.0
    weight = model.base_model.model.lin0.base_layer.weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unmerge result can be inaccurate"
        model.merge_adapter()
        model.unmerge_adapter()
    assert (model.base_model.model.lin0.base_layer.weight - weight).abs().max() > 0.1


def test_ia3_merge_unmerge_is_exact_too() -> None:
    model = _llama_bf16(IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]))
    original = _weights(model)
    model.merge_adapter()
    assert all(isinstance(layer, IA3Layer) and layer.merged for layer in _layers(model))
    model.unmerge_adapter()
    assert all(torch.equal(p, original[n]) for n, p in _weights(model).items())


def test_safe_merge_with_modules_to_save_merges() -> None:
    _, model = lora_mlp(modules_to_save=["head"])
    unmerged = Snapshot.of(model, X).output
    model.merge_adapter(safe_merge=True)
    assert unmerged is not None and torch.allclose(Snapshot.of(model, X).output, unmerged, atol=1e-5)
