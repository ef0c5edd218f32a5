"""Properties of merging (hypothesis): LoRA and IA3 across shapes, ranks, dtypes and adapter counts.

For every example: merge then unmerge is bit-identical; the merged weight is the fp32
(fp64 for fp64) result rounded once; merged and unmerged outputs agree; without residues
an unmerge is within one ulp of the larger of the weight before and after merging; a
failure at any layer of a merge leaves every weight bit-identical.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from peft_core import MergeError, inject_adapter_in_model
from peft_core.contract import AdapterLayer
from peft_core.engine.merging import drop_merge_residues, merge, merge_layer, unmerge_layer
from peft_ia3 import IA3Config, IA3Layer
from peft_lora import Linear as LoraLinear
from peft_lora import LoraConfig
from reliability.common import PROPERTIES

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
MANTISSA_BITS = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10, torch.float64: 52}
# Outputs, merged vs unmerged. The LoRA delta is computed in fp32 even on an fp64 base.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 5e-3, torch.float64: 1e-5}

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))
seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([1e-3, 1e-1, 1.0, 10.0])  # update size relative to the weights


def _ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tiny = torch.finfo(dtype).tiny
    exponent = torch.floor(torch.log2(x.double().abs().clamp_min(tiny)))
    return torch.exp2(exponent - MANTISSA_BITS[dtype])


def _lora_layer(shape: tuple[int, int], ranks: list[int], dtype: torch.dtype, scale: float, seed: int) -> LoraLinear:
    generator = torch.Generator().manual_seed(seed)
    holder = nn.Module()
    holder.layer = nn.Linear(*shape, dtype=dtype)
    with torch.no_grad():
        holder.layer.weight.copy_(torch.randn(shape[::-1], generator=generator))
    for i, r in enumerate(ranks):
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=2 * r, target_modules=["layer"]), holder, f"a{i}")
    layer = holder.layer
    assert isinstance(layer, LoraLinear)
    with torch.no_grad():
        for name in layer.adapter_names:  # delta ~ scale * weight
            layer.lora_A[name].weight.copy_(torch.randn(layer.lora_A[name].weight.shape, generator=generator))
            b = torch.randn(layer.lora_B[name].weight.shape, generator=generator)
            layer.lora_B[name].weight.copy_(b * scale / (2 * layer.r[name] ** 0.5))
    return layer


@PROPERTIES
@given(shapes, st.lists(st.integers(1, 8), min_size=1, max_size=3), st.sampled_from(DTYPES), scales, seeds)
def test_lora_merge_algebra(
    shape: tuple[int, int], ranks: list[int], dtype: torch.dtype, scale: float, seed: int
) -> None:
    layer = _lora_layer(shape, ranks, dtype, scale, seed)
    names = layer.adapter_names
    weight = layer.base_layer.weight.detach().clone()
    x = torch.randn(3, shape[0], dtype=dtype, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        layer.set_active_adapters(names)
        unmerged_out = layer(x)
        compute = torch.promote_types(dtype, torch.float32)
        expected = (weight.to(compute) + sum(layer.delta_weight(n) for n in names)).to(dtype)
        merge_layer(layer, names)
        assert torch.equal(layer.base_layer.weight, expected)  # rounded once
        merged_out = layer(x)
        assert torch.allclose(merged_out, unmerged_out, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * (1 + scale))
        unmerge_layer(layer)
        assert torch.equal(layer.base_layer.weight, weight)  # bit for bit

        for name in names:  # one merge per adapter, undone newest first: still exact
            merge_layer(layer, [name])
        unmerge_layer(layer)
        assert torch.equal(layer.base_layer.weight, weight)

        merge_layer(layer, names)
        drop_merge_residues(layer)
        unmerge_layer(layer)
        drift = (layer.base_layer.weight.double() - weight.double()).abs()
        assert bool((drift <= _ulp(torch.maximum(weight.double().abs(), expected.double().abs()), dtype)).all())


@PROPERTIES
@given(
    shapes,
    st.lists(st.booleans(), min_size=1, max_size=3),
    st.sampled_from(DTYPES),
    seeds,
    st.booleans(),
)
def test_ia3_merge_algebra(
    shape: tuple[int, int], feedforward: list[bool], dtype: torch.dtype, seed: int, with_zero: bool
) -> None:
    generator = torch.Generator().manual_seed(seed)
    holder = nn.Module()
    holder.layer = nn.Linear(*shape, dtype=dtype)
    for i, ff in enumerate(feedforward):
        config = IA3Config(target_modules=["layer"], feedforward_modules=["layer"] if ff else [])
        inject_adapter_in_model(config, holder, f"a{i}")
    layer = holder.layer
    assert isinstance(layer, IA3Layer)
    names = layer.adapter_names
    with torch.no_grad():
        for name in names:  # entries in ±[0.1, 10)
            vector = layer.ia3_l[name]
            magnitude = torch.exp(torch.empty(vector.shape).uniform_(-2.3, 2.3, generator=generator))
            sign = torch.randint(0, 2, vector.shape, generator=generator) * 2 - 1
            vector.copy_(magnitude * sign)
        if with_zero:
            layer.ia3_l[names[-1]].view(-1)[0] = 0.0
    state = {k: v.clone() for k, v in layer.base_layer.state_dict().items()}
    if with_zero:
        with pytest.raises(MergeError, match="zero entries"):
            layer.check_merge(names)
        return
    compute = torch.promote_types(dtype, torch.float32)
    out_scale, in_scale = torch.ones(shape[1]), torch.ones(shape[0])  # vectors multiply in fp32
    for name in names:
        if layer.is_feedforward[name]:
            in_scale = in_scale * layer.ia3_l[name].detach().float().flatten()
        else:
            out_scale = out_scale * layer.ia3_l[name].detach().float().flatten()
    expected = (state["weight"].to(compute) * in_scale[None, :] * out_scale[:, None]).to(dtype)  # as IA3 does
    merge_layer(layer, names)
    assert torch.equal(layer.base_layer.weight, expected)
    unmerge_layer(layer)
    assert all(torch.equal(v, state[k]) for k, v in layer.base_layer.state_dict().items())


@PROPERTIES
@given(st.integers(2, 5), st.data(), st.sampled_from(DTYPES), st.sampled_from(["lora", "ia3"]))
def test_a_failure_at_any_layer_leaves_every_weight_bit_identical(
    depth: int, data: st.DataObject, dtype: torch.dtype, method: str
) -> None:
    model = nn.Sequential(*[nn.Linear(6, 6, dtype=dtype) for _ in range(depth)])
    targets = [str(i) for i in range(depth)]
    config = LoraConfig(target_modules=targets, init_lora_weights=False) if method == "lora" else None
    inject_adapter_in_model(config or IA3Config(target_modules=targets, init_ia3_weights=False), model)
    layers = [m for m in model.modules() if isinstance(m, AdapterLayer)]
    k = data.draw(st.integers(0, depth - 1), label="failing layer")
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def fail(*_: object) -> dict[str, torch.Tensor]:
        raise RuntimeError("injected")

    layers[k].merged_weights = fail  # type: ignore[method-assign]
    with pytest.raises(MergeError, match="rolled back in every layer: injected"):
        merge(model, ["default"])
    assert all(torch.equal(v, state[key]) for key, v in model.state_dict().items())
    assert not any(layer.merged for layer in layers)
