"""DoRA layers: the norm, its cache, the magnitude's start, exact merges, refusals, swaps."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peft_core import ConfigError, MergeError, PeftModel, get_peft_model, hotswap_adapter_from_state_dict
from peft_dora import DoraConv, DoraEmbedding, DoraLinear, direct_row_norms, row_norms
from peft_dora.norms import squared_row_norms
from peft_lora import LoraConfig
from support.models import MLP, ConvNet, tiny_gpt2, tiny_llama, token_ids


def _noisy(model: PeftModel, seed: int = 1) -> PeftModel:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_the_expanded_norm_equals_the_dense_one(dtype: torch.dtype, transposed: bool) -> None:
    weight = torch.randn(48, 40).to(dtype)
    rows = weight.T if transposed else weight  # Conv1D and embeddings see a transposed view
    a, b = torch.randn(4, rows.shape[1]), torch.randn(rows.shape[0], 4)
    expected = direct_row_norms(rows, a, b, 0.7)
    got = row_norms(rows, a, b, 0.7, squared_row_norms(rows))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: W A^T is a bf16 product
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=0)


def test_the_magnitude_starts_at_the_base_weights_norms_in_hf_shapes() -> None:
    mlp = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["emb", "lin0"], use_dora=True)).get_base_model()
    conv = get_peft_model(ConvNet(), LoraConfig(r=2, target_modules=["conv1d", "conv2d"], use_dora=True))
    gpt2 = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True))
    layers = {
        "linear": mlp.lin0,
        "embedding": mlp.emb,
        "conv1d": conv.get_base_model().conv1d,
        "conv2d": conv.get_base_model().conv2d,
        "gpt2_conv1d": gpt2.get_base_model().transformer.h[0].attn.c_attn,
    }
    assert isinstance(layers["linear"], DoraLinear) and isinstance(layers["embedding"], DoraEmbedding)
    assert isinstance(layers["conv2d"], DoraConv) and isinstance(layers["gpt2_conv1d"], DoraLinear)
    weights = {name: layer.base_layer.weight for name, layer in layers.items()}
    expected = {
        "linear": weights["linear"].norm(dim=1),  # (out,)
        "embedding": weights["embedding"].norm(dim=0),  # (embedding_dim,): over the vocabulary
        "conv1d": weights["conv1d"].flatten(1).norm(dim=1).view(1, -1, 1),
        "conv2d": weights["conv2d"].flatten(1).norm(dim=1).view(1, -1, 1, 1),
        "gpt2_conv1d": weights["gpt2_conv1d"].norm(dim=0),  # stored (in, out)
    }
    for name, layer in layers.items():
        magnitude = layer.lora_magnitude_vector["default"]
        assert magnitude.shape == expected[name].shape, name
        torch.testing.assert_close(magnitude, expected[name], atol=1e-6, rtol=0, msg=name)


def test_the_norm_is_recomputed_exactly_when_something_it_depends_on_changes() -> None:
    model = _noisy(get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"], use_dora=True)))
    layer = model.get_base_model().lin0
    assert isinstance(layer, DoraLinear)

    def dense() -> torch.Tensor:
        a, b = layer.lora_factors("default")
        return direct_row_norms(layer.base_layer.weight, a, b, layer.scaling["default"])

    first = layer.weight_norm("default")
    assert layer.weight_norm("default") is first  # nothing changed: cached
    torch.testing.assert_close(first, dense(), atol=1e-6, rtol=0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(token_ids(batch=2, length=4, vocab=20)).pow(2).sum().backward()
    optimizer.step()  # moves A and B in place
    assert not torch.allclose(layer.weight_norm("default"), first)
    torch.testing.assert_close(layer.weight_norm("default"), dense(), atol=1e-6, rtol=0)
    with torch.no_grad():
        layer.base_layer.weight.mul_(2)  # the base weight itself
    torch.testing.assert_close(layer.weight_norm("default"), dense(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_unmerge_cycles_restore_the_base_bit_for_bit(dtype: torch.dtype) -> None:
    base = tiny_llama().to(dtype)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "embed_tokens"], use_dora=True)
    model = _noisy(get_peft_model(copy.deepcopy(base), config))
    original = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer" in k}
    ids = token_ids(batch=2)
    unmerged = model(input_ids=ids).logits
    for _ in range(10):
        model.merge_adapter()
        merged = model(input_ids=ids).logits
        model.unmerge_adapter()
    state = model.get_base_model().state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items())
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(merged, unmerged, atol=tolerance, rtol=0)


def test_a_second_merge_on_merged_dora_layers_is_refused_and_changes_nothing() -> None:
    model = _noisy(get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)))
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    _noisy(model, seed=2)
    model.merge_adapter(["default"])
    before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
    with pytest.raises(MergeError, match="merged together in one call.*unmerge_adapter"):
        model.merge_adapter(["other"])
    assert all(torch.equal(v, before[k]) for k, v in model.get_base_model().state_dict().items())


def test_merging_two_adapters_at_once_equals_their_forward_and_unmerges_exactly() -> None:
    base = tiny_llama()
    model = _noisy(get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)))
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    _noisy(model, seed=2)
    model.set_adapter(["default", "other"])
    ids = token_ids(batch=2)
    both = model(input_ids=ids).logits
    model.merge_adapter()
    torch.testing.assert_close(model(input_ids=ids).logits, both, atol=1e-4, rtol=0)
    model.unmerge_adapter()
    reference = base.state_dict()
    state = model.get_base_model().state_dict()
    assert all(torch.equal(state[k.replace("q_proj.", "q_proj.base_layer.")], v) for k, v in reference.items())


def test_zero_magnitude_refuses_a_reversible_merge_but_merges_for_unload() -> None:
    model = _noisy(get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"], use_dora=True)))
    layer = model.get_base_model().lin0
    with torch.no_grad():
        layer.lora_magnitude_vector["default"][3] = 0.0
    x = token_ids(batch=2, length=4, vocab=20)
    expected = model(x)
    with pytest.raises(MergeError, match="zero entries"):
        model.merge_adapter()
    torch.testing.assert_close(model.merge_and_unload()(x), expected, atol=1e-5, rtol=0)


def test_delta_weight_is_the_whole_change_a_merge_makes() -> None:
    model = _noisy(
        get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True))
    )
    layer = model.get_base_model().transformer.h[0].attn.c_attn
    before = layer.base_layer.weight.detach().clone()
    delta = layer.delta_weight("default")
    model.merge_adapter()
    torch.testing.assert_close(layer.base_layer.weight - before, delta, atol=1e-6, rtol=0)


def test_every_adapter_of_a_module_is_dora_or_none_is() -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"], use_dora=True))
    with pytest.raises(ConfigError, match="does not set use_dora.*same use_dora"):
        model.add_adapter("plain", LoraConfig(r=2, target_modules=["lin0"]))
    assert list(model.peft_config) == ["default"]
    plain = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"]))
    with pytest.raises(ConfigError, match="use_dora"):
        plain.add_adapter("dora", LoraConfig(r=2, target_modules=["lin0"], use_dora=True))


def test_hotswap_replaces_the_magnitude_too() -> None:
    model = _noisy(get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0", "emb"], use_dora=True)))
    other = copy.deepcopy(model)
    with torch.no_grad():  # another adapter that differs only in its magnitudes
        for layer in (other.get_base_model().lin0, other.get_base_model().emb):
            layer.lora_magnitude_vector["default"].mul_(1.5)
    x = token_ids(batch=2, length=4, vocab=20)
    expected = other(x)
    assert not torch.allclose(model(x), expected)
    tensors = {k: v.detach().clone() for k, v in other.base_model.adapter_state_dict("default").items()}
    hotswap_adapter_from_state_dict(model, tensors, other.peft_config["default"])
    torch.testing.assert_close(model(x), expected, atol=1e-6, rtol=0)


def test_per_row_batches_with_dora_and_a_base_row_match_each_adapter_alone() -> None:
    model = _noisy(get_peft_model(ConvNet(), LoraConfig(r=2, target_modules=["conv1d", "conv2d"], use_dora=True)))
    model.add_adapter("other", LoraConfig(r=3, target_modules=["conv2d"], use_dora=True))
    _noisy(model, seed=3)
    model.eval()
    x = torch.randn(4, 4, 8, 8)
    names = ["other", "__base__", "default", "other"]
    alone = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        alone[name] = model(x)
    with model.disable_adapter():
        alone["__base__"] = model(x)
    expected = torch.stack([alone[name][row] for row, name in enumerate(names)])
    torch.testing.assert_close(model(x, adapter_names=names), expected, atol=1e-6, rtol=0)


def test_dora_trains_its_magnitude_and_factors_only() -> None:
    model = get_peft_model(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), LoraConfig(r=2, target_modules=["0"], use_dora=True)
    )
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [
        "base_model.model.0.lora_A.default.weight",
        "base_model.model.0.lora_B.default.weight",
        "base_model.model.0.lora_magnitude_vector.default",
    ]
    assert model.get_nb_trainable_parameters()[0] == 2 * 8 + 8 * 2 + 8
