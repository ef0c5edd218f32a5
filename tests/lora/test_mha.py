"""LoRA on ``nn.MultiheadAttention`` (peft_lora.mha): its math, what it exposes, what it refuses."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from peft_core import ConfigError, PeftError, PeftModel, get_peft_model
from peft_lora import Linear, LoraConfig, MultiheadAttention, convert_to_lora
from support.models import AttentionNet, EncoderNet


def _inputs() -> Tensor:
    return torch.randn(5, 3, 10, generator=torch.Generator().manual_seed(0))


def _noisy(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def test_forward_is_the_attention_with_both_weights_updated() -> None:
    """``W_in + s B A`` and ``W_out + 2 s B_o A_o`` (the incumbent's doubled out_proj update)."""
    base = AttentionNet().eval()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["mha"]))
    _noisy(model)
    tensors = model.base_model.adapter_state_dict("default")
    a, b = tensors["base_model.model.mha.lora_A.weight"], tensors["base_model.model.mha.lora_B.weight"]
    out_a = tensors["base_model.model.mha.base_layer.out_proj.lora_A.weight"]
    out_b = tensors["base_model.model.mha.base_layer.out_proj.lora_B.weight"]
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.mha.in_proj_weight += 2.0 * b @ a
        reference.mha.out_proj.weight += 2 * 2.0 * out_b @ out_a
        torch.testing.assert_close(model(_inputs()), reference(_inputs()), atol=1e-6, rtol=0)


def test_forward_and_backward_leave_the_base_weights_untouched() -> None:
    model = get_peft_model(AttentionNet(), LoraConfig(r=4, target_modules=["mha"], init_lora_weights=False))
    attention = model.base_model.model.mha
    assert isinstance(attention, MultiheadAttention)
    weights = [attention.base_layer.in_proj_weight, attention.base_layer.out_proj.weight]
    before = [(w.clone(), w._version, type(w)) for w in weights]
    model.train()
    model(_inputs()).pow(2).mean().backward()
    for weight, (value, version, kind) in zip(weights, before, strict=True):
        assert torch.equal(weight, value) and weight._version == version and type(weight) is kind
        assert weight.grad is None
    names = {n for n, _ in model.named_parameters()}
    assert "base_model.model.mha.base_layer.in_proj_weight" in names
    assert "base_model.model.mha.base_layer.out_proj.weight" in names


def test_unmerge_restores_the_base_weights_bit_for_bit() -> None:
    model = get_peft_model(AttentionNet(), LoraConfig(r=4, target_modules=["mha"], init_lora_weights=False))
    before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
    unmerged = model(_inputs()).detach()
    model.merge_adapter()
    merged_state = model.get_base_model().state_dict()
    assert not torch.equal(merged_state["mha.base_layer.in_proj_weight"], before["mha.base_layer.in_proj_weight"])
    assert not torch.equal(merged_state["mha.base_layer.out_proj.weight"], before["mha.base_layer.out_proj.weight"])
    torch.testing.assert_close(model(_inputs()), unmerged, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    after = model.get_base_model().state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_the_wrapped_attention_exposes_what_callers_read() -> None:
    base = AttentionNet()
    attention = base.mha
    model = get_peft_model(base, LoraConfig(target_modules=["mha"]))
    layer = model.base_model.model.mha
    assert isinstance(layer, MultiheadAttention)
    for name in ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout", "batch_first"):
        assert getattr(layer, name) == getattr(attention, name), name
    assert layer.head_dim == attention.head_dim and layer.add_zero_attn == attention.add_zero_attn
    assert layer.in_proj_weight is attention.in_proj_weight and layer.in_proj_bias is attention.in_proj_bias
    assert layer.out_proj is attention.out_proj and layer.bias_k is None and layer.bias_v is None
    mask, padding = torch.randint(0, 2, (10, 10)).bool(), torch.randint(0, 2, (10, 10)).bool()
    query = torch.rand(10, 10, 10)
    expected = attention.merge_masks(mask, padding, query)
    got = layer.merge_masks(mask, padding, query)
    assert got[1] == expected[1] and torch.equal(got[0], expected[0])  # type: ignore[arg-type]


def test_a_full_state_dict_loads_back_after_forward() -> None:
    """The incumbent once needed a workaround here (parameters re-registered around forward)."""
    config = LoraConfig(target_modules=["mha"], init_lora_weights=False)
    first = get_peft_model(AttentionNet(), config).eval()
    state = {k: v.clone() for k, v in first.state_dict().items()}
    second = get_peft_model(AttentionNet(), config)
    second(_inputs())
    second.load_state_dict(state)
    torch.testing.assert_close(second.eval()(_inputs()), first(_inputs()), atol=0, rtol=0)


def test_encoder_layer_fused_path_does_not_skip_the_adapter() -> None:
    model = get_peft_model(EncoderNet(), LoraConfig(r=2, target_modules=["self_attn"], init_lora_weights=False))
    x = torch.randn(2, 5, 8)
    model.train()  # dropout=0: the unfused path, same math
    reference = model(x).detach()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=0)
        with model.disable_adapter():
            assert not torch.allclose(model(x), reference, atol=1e-3)


# --- refusals: each one error naming the problem and the fix ---


def test_separate_query_key_value_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"kdim=20, vdim=30.*leave it out of target_modules"):
        get_peft_model(AttentionNet(kdim=20, vdim=30), LoraConfig(target_modules=["mha"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"use_dora": True}, "does not support use_dora=True.*set use_dora=False"),
        ({"lora_bias": True}, "does not support lora_bias=True.*set lora_bias=False"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' is not supported on nn.MultiheadAttention"),
        ({"init_lora_weights": "orthogonal"}, "init_lora_weights='orthogonal' is not supported"),
    ],
)
def test_variants_the_incumbent_lacks_are_refused(options: dict[str, object], message: str) -> None:
    base = AttentionNet()
    before = copy.deepcopy(base.state_dict())
    with pytest.raises(ConfigError, match=message):
        get_peft_model(base, LoraConfig(target_modules=["mha"], **options))  # type: ignore[arg-type]
    assert isinstance(base.mha, nn.MultiheadAttention)
    assert all(torch.equal(base.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("targets", [["mha.out_proj"], "all-linear"])
def test_out_proj_alone_is_refused(targets: list[str] | str) -> None:
    """Its forward is never called by the attention: an adapter there would do nothing."""
    message = re.escape("'mha.out_proj' is the out_proj of the nn.MultiheadAttention 'mha'")
    with pytest.raises(ConfigError, match=message):
        get_peft_model(AttentionNet(), LoraConfig(target_modules=targets))
    model = get_peft_model(AttentionNet(), LoraConfig(target_modules="all-linear", exclude_modules=["mha.out_proj"]))
    assert isinstance(model.base_model.model.lin0, Linear)
    assert isinstance(model.base_model.model.mha, nn.MultiheadAttention)


def test_dropout_is_not_applied_and_a_training_config_says_so() -> None:
    config = LoraConfig(target_modules=["mha"], lora_dropout=0.1, init_lora_weights=False)
    with pytest.warns(UserWarning, match="lora_dropout=0.1 is not applied on nn.MultiheadAttention"):
        model = get_peft_model(AttentionNet(), config)
    model.train()
    torch.testing.assert_close(model(_inputs()), model(_inputs()), atol=0, rtol=0)  # no random mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_peft_model(AttentionNet(), LoraConfig(target_modules=["mha"], lora_dropout=0.1, inference_mode=True))


def test_per_row_weighted_and_conversion_are_refused() -> None:
    model = get_peft_model(AttentionNet(), LoraConfig(target_modules=["mha"], init_lora_weights=False))
    model.add_adapter("other", LoraConfig(target_modules=["mha"], init_lora_weights=False))
    with pytest.raises(PeftError, match="not supported by MultiheadAttention"):
        model(_inputs(), adapter_names=["default", "other", "default"])
    with pytest.raises(PeftError, match="add_weighted_adapter"):
        model.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix")
    layer = model.base_model.model.mha
    with pytest.raises(PeftError, match="updates two weights"):
        layer.delta_weight("default")
    with pytest.raises(PeftError, match="'mha' wraps a MultiheadAttention, whose update cannot be converted"):
        convert_to_lora(model, 2)


def test_conversion_relative_to_the_initial_adapter_doubles_both_pairs(tmp_path: Path) -> None:
    base = AttentionNet().eval()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["mha"]))
    model.save_pretrained(tmp_path / "initial")
    _noisy(model)
    model.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=tmp_path / "initial")
    converted = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "lora")
    shapes = {
        k.rpartition("mha.")[2]: tuple(t.shape) for k, t in converted.base_model.adapter_state_dict("default").items()
    }
    assert shapes == {
        "lora_A.weight": (8, 10),
        "lora_B.weight": (30, 8),
        "base_layer.out_proj.lora_A.weight": (8, 10),
        "base_layer.out_proj.lora_B.weight": (10, 8),
    }
    with torch.no_grad():  # B0 = 0 at the default init: the converted adapter computes the trained one
        torch.testing.assert_close(converted(_inputs()), model(_inputs()), atol=1e-5, rtol=0)
