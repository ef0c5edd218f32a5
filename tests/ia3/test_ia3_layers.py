"""IA3 layers against the formulas ``y = l * (W x + b)`` and ``y = W (l * x) + b``, one layer type at a time."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_core import MergeError, get_peft_model, inject_adapter_in_model
from peft_core.engine.merging import merge_layer, unmerge_layer
from peft_ia3 import IA3Config, IA3Layer


def _wrap(module: nn.Module, feedforward: bool, **kwargs: object) -> IA3Layer:
    """``module`` as the only target of a random-init IA3 adapter (vectors kept away from zero)."""
    holder = nn.Module()
    holder.layer = module
    config = IA3Config(
        **(
            {"target_modules": ["layer"], "feedforward_modules": ["layer"] if feedforward else None}
            | {"init_ia3_weights": False}
            | kwargs
        )
    )
    inject_adapter_in_model(config, holder)
    layer = holder.layer
    assert isinstance(layer, IA3Layer)
    with torch.no_grad():
        for vector in layer.ia3_l.values():
            vector.copy_(torch.rand_like(vector) + 0.5)
    return layer


@pytest.mark.parametrize("feedforward", [False, True])
def test_linear_matches_the_formula(feedforward: bool) -> None:
    base = nn.Linear(5, 7)
    reference = copy.deepcopy(base)
    layer = _wrap(base, feedforward)
    vector = layer.ia3_l["default"]
    assert vector.shape == ((1, 5) if feedforward else (7, 1))  # Hugging Face PEFT's checkpoint shapes
    x = torch.randn(2, 3, 5)
    with torch.no_grad():
        expected = reference(x * vector.flatten()) if feedforward else reference(x) * vector.flatten()
        assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.parametrize("feedforward", [False, True])
def test_transformers_conv1d_scales_the_transposed_weight(feedforward: bool) -> None:
    base = Conv1D(7, 5)  # weight stored (in=5, out=7)
    nn.init.normal_(base.bias)
    reference = copy.deepcopy(base)
    with pytest.warns(UserWarning, match="fan_in_fan_out=True"):
        layer = _wrap(base, feedforward)
    assert layer.fan_in_fan_out and layer.ia3_l["default"].shape == ((1, 5) if feedforward else (7, 1))
    x = torch.randn(4, 5)
    vector = layer.ia3_l["default"].flatten()
    with torch.no_grad():
        unmerged = layer(x)
        expected = reference(x * vector) if feedforward else reference(x) * vector
        assert torch.allclose(unmerged, expected, atol=1e-6)
        merge_layer(layer, ["default"])
        assert torch.allclose(base(x), unmerged, atol=1e-5)  # the merged base alone
        unmerge_layer(layer)
        assert torch.allclose(base.weight, reference.weight, atol=1e-6)
        assert torch.allclose(base.bias, reference.bias, atol=1e-6)


CONVS = {
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1), (2, 4, 9)),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, padding=1, stride=2), (2, 4, 8, 8)),
    "conv3d": (lambda: nn.Conv3d(2, 3, (1, 2, 2)), (2, 2, 3, 4, 4)),
    "grouped": (lambda: nn.Conv2d(4, 6, 3, groups=2), (2, 4, 5, 5)),
    "depthwise": (lambda: nn.Conv2d(4, 8, 3, groups=4, bias=False), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("feedforward", [False, True])
@pytest.mark.parametrize("kind", CONVS)
def test_convolutions_scale_channels_and_merge_exactly(kind: str, feedforward: bool) -> None:
    build, shape = CONVS[kind]
    base = build()
    reference = copy.deepcopy(base)
    layer = _wrap(base, feedforward)
    assert isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    channels = base.in_channels if feedforward else base.out_channels
    assert layer.ia3_l["default"].shape == (1, channels) + (1,) * (len(shape) - 2)
    x = torch.randn(shape)
    vector = layer.ia3_l["default"]
    with torch.no_grad():
        unmerged = layer(x)
        expected = reference(x * vector) if feedforward else reference(x) * vector
        assert torch.allclose(unmerged, expected, atol=1e-5)
        merge_layer(layer, ["default"])
        assert torch.allclose(base(x), unmerged, atol=1e-5)
        unmerge_layer(layer)
        assert torch.allclose(base.weight, reference.weight, atol=1e-6)


def test_merge_scales_the_bias_only_for_output_scaling() -> None:
    out_layer = _wrap(nn.Linear(3, 4), feedforward=False)
    in_layer = _wrap(nn.Linear(3, 4), feedforward=True)
    for layer, scaled in ((out_layer, True), (in_layer, False)):
        bias = layer.base_layer.bias.detach().clone()
        vector = layer.ia3_l["default"].detach().flatten()
        merge_layer(layer, ["default"])
        expected = bias * vector if scaled else bias
        assert torch.allclose(layer.base_layer.bias, expected, atol=1e-7)


def test_several_active_adapters_multiply() -> None:
    base = nn.Linear(6, 6)
    reference = copy.deepcopy(base)
    holder = nn.Sequential(base)
    model = get_peft_model(holder, IA3Config(target_modules=["0"], init_ia3_weights=False))
    model.add_adapter("ff", IA3Config(target_modules=["0"], feedforward_modules=["0"], init_ia3_weights=False))
    model.add_adapter("out2", IA3Config(target_modules=["0"], init_ia3_weights=False))
    model.set_adapter(["default", "ff", "out2"])
    layer = holder[0]
    assert isinstance(layer, IA3Layer)
    out_a, in_b, out_c = (layer.ia3_l[n].detach().flatten() for n in ("default", "ff", "out2"))
    x = torch.randn(5, 6)
    with torch.no_grad():
        expected = reference(x * in_b) * out_a * out_c
        assert torch.allclose(model(x), expected, atol=1e-5)
        model.merge_adapter()
        assert torch.allclose(model(x), expected, atol=1e-5)
        model.unmerge_adapter()
        assert torch.allclose(layer.base_layer.weight, reference.weight, atol=1e-6)
        model.set_adapter("ff")
        assert torch.allclose(model(x), reference(x * in_b), atol=1e-5)


def test_default_init_is_ones_and_random_init_is_not() -> None:
    holder = nn.Sequential(nn.Linear(64, 64))
    inject_adapter_in_model(IA3Config(target_modules=["0"]), holder)
    assert torch.equal(holder[0].ia3_l["default"], torch.ones(64, 1))
    holder = nn.Sequential(nn.Linear(64, 64))
    inject_adapter_in_model(IA3Config(target_modules=["0"], init_ia3_weights=False), holder)
    assert holder[0].ia3_l["default"].std() > 0.5  # standard normal, as Hugging Face PEFT draws it


def test_merge_with_a_zero_entry_is_refused_but_merge_and_unload_works() -> None:
    model = get_peft_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), IA3Config(target_modules=["0"]))
    layer = model.base_model.model[0]
    weight = layer.base_layer.weight.detach().clone()
    x = torch.randn(3, 4)
    with torch.no_grad():
        layer.ia3_l["default"][2] = 0.0
        unmerged = model(x)
    with pytest.raises(MergeError, match="zero entries.*merge_and_unload"):
        model.merge_adapter()
    assert not layer.merged and torch.equal(layer.base_layer.weight, weight)
    with torch.no_grad():
        assert torch.allclose(model.merge_and_unload()(x), unmerged, atol=1e-6)


def test_a_vector_whose_reciprocal_overflows_is_refused_too() -> None:
    layer = _wrap(nn.Linear(4, 4), feedforward=False)
    with torch.no_grad():
        layer.ia3_l["default"][0] = 1e-39  # subnormal: 1 / x is inf in fp32
    with pytest.raises(MergeError, match="zero entries"):
        layer.check_merge(["default"])
    layer.check_merge(["default"], reversible=False)  # fine when no unmerge will follow


def test_vectors_in_fp32_on_a_bf16_base() -> None:
    base = nn.Linear(8, 8).to(torch.bfloat16)
    reference = copy.deepcopy(base)
    layer = _wrap(base, feedforward=False)
    vector = layer.ia3_l["default"]
    assert vector.dtype == torch.float32
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        out = layer(x)
        assert out.dtype == torch.bfloat16
        expected = (reference(x).float() * vector.flatten()).to(torch.bfloat16)
        assert torch.equal(out, expected)  # scaled in fp32, rounded once
        merge_layer(layer, ["default"])
        scaled = (reference.weight.float() * vector).to(torch.bfloat16)  # (out, 1) scales rows
        assert torch.equal(base.weight, scaled)
        unmerge_layer(layer)
        # One bf16 rounding on merge and one on unmerge: within 2 ulps (2 * 2^-8 relative).
        assert torch.allclose(base.weight.float(), reference.weight.float(), rtol=2**-7, atol=0)


def test_vectors_in_the_base_dtype_when_autocast_is_off() -> None:
    holder = nn.Sequential(nn.Linear(8, 8).to(torch.bfloat16))
    inject_adapter_in_model(IA3Config(target_modules=["0"]), holder, autocast_adapter_dtype=False)
    assert holder[0].ia3_l["default"].dtype == torch.bfloat16


def test_vectors_are_created_on_the_meta_device() -> None:
    with torch.device("meta"):
        holder = nn.Sequential(nn.Linear(4096, 4096))
    inject_adapter_in_model(IA3Config(target_modules=["0"]), holder)
    assert holder[0].ia3_l["default"].device.type == "meta"


def test_unsupported_module_types_are_refused_by_name() -> None:
    holder = nn.Sequential(nn.Embedding(4, 4))
    with pytest.raises(Exception, match="cannot adapt '0' of type Embedding"):
        inject_adapter_in_model(IA3Config(target_modules=["0"]), holder)
    assert isinstance(holder[0], nn.Embedding)
