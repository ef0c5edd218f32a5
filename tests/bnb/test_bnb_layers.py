"""peft-bnb's layers: right shapes and counts, the weight in both bitsandbytes layouts, merges refused."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

bnb = pytest.importorskip("bitsandbytes")

import peft  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from peft_bnb import prepare_model_for_kbit_training  # noqa: E402
from peft_bnb.quantized import dequantized_weight  # noqa: E402
from peft_core import PeftModel, get_peft_model  # noqa: E402
from peft_core.io.precheck import check_adapter_fits  # noqa: E402
from peft_dora import DoraLayer, direct_row_norms  # noqa: E402
from peft_lora import LoraConfig  # noqa: E402
from support.hf_peft import add_noise, hf_model, inputs_for  # noqa: E402
from support.quantized import KINDS, llama_for_quantization, quantized_llama  # noqa: E402

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("kind", KINDS)
def test_lora_factors_have_the_layers_shapes_and_hf_parameter_count(kind: str) -> None:
    base = quantized_llama(kind)
    ours = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, target_modules=LINEAR))
    theirs = hf_model(base, peft.LoraConfig(r=8, target_modules=LINEAR))
    layer = ours.get_base_model().model.layers[0].mlp.down_proj  # Linear(128 -> 64), packed (4096, 1) in 4-bit
    a, b = layer.lora_factors("default")
    assert a.shape == (8, 128) and b.shape == (64, 8)
    expected = sum(
        8 * (m.in_features + m.out_features)
        for m in base.modules()
        if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    )
    assert ours.get_nb_trainable_parameters()[0] == expected == theirs.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("kind", KINDS)
def test_the_dequantized_weight_is_the_layers_weight(kind: str) -> None:
    dense = llama_for_quantization().model.layers[0].self_attn.q_proj.weight.detach()
    layer = quantized_llama(kind).model.layers[0].self_attn.q_proj
    weight = dequantized_weight(layer)
    assert weight.shape == dense.shape
    x = torch.randn(3, 64)
    layer.train()  # the kernel's training path: the stored layout as loaded
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ weight.T.to(x.dtype), atol=0.05 if kind == "int8" else 1e-4, rtol=0)
    # within the quantization error of the float weight (4-bit: ~11 % of the largest entry)
    error = float((weight.float() - dense).abs().max() / dense.abs().max())
    assert error < (0.02 if kind == "int8" else 0.2), error


@pytest.mark.parametrize("kind", ["nf4", "nf4_double", "fp4"])
def test_a_4bit_weight_repacked_for_cpu_inference_dequantizes_to_the_same_matrix(kind: str) -> None:
    layer = quantized_llama(kind).model.layers[0].self_attn.q_proj
    before = dequantized_weight(layer).clone()
    with torch.no_grad():
        layer.eval()(torch.randn(2, 64))  # bitsandbytes repacks here on CPUs with AVX512-BF16
    if not getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes keeps the layout")
    read_naively = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    assert (read_naively.float() - before.float()).abs().max() > 1e-2  # another matrix: why it matters
    # The repacked scales are bf16: the matrix the layer now computes with, within their rounding.
    torch.testing.assert_close(dequantized_weight(layer).float(), before.float(), rtol=1e-2, atol=1e-3)


def test_dora_norms_on_4bit_follow_the_repacked_weight() -> None:
    model = get_peft_model(quantized_llama("nf4"), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    add_noise(model)
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(layer, DoraLayer)
    model.eval()
    with torch.no_grad():
        model(input_ids=inputs_for("llama"))  # repacks (AVX512-BF16 CPUs)
    a, b = layer.lora_factors("default")
    expected = direct_row_norms(dequantized_weight(layer.base_layer).float(), a, b, layer.scaling["default"])
    torch.testing.assert_close(layer.weight_norm("default"), expected, rtol=1e-5, atol=0)


def test_8bit_dora_gives_the_same_outputs_call_after_call() -> None:
    model = get_peft_model(quantized_llama("int8"), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    add_noise(model)
    model.eval()
    x = inputs_for("llama")
    with torch.no_grad():
        first = model(input_ids=x).logits
        for _ in range(3):
            torch.testing.assert_close(model(input_ids=x).logits, first, atol=0, rtol=0)


def test_a_load_is_checked_on_a_shape_only_copy_of_a_quantized_model(tmp_path: Path) -> None:
    """The pre-check injects into a meta-device skeleton: quantized layers (no float weight, no bias) too."""
    base = quantized_llama("nf4_double")
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    tensors = {k: v.detach() for k, v in model.base_model.adapter_state_dict("default").items()}
    report = check_adapter_fits(base, model.peft_config["default"], tensors, "default", True, tmp_path)
    assert report is not None and report.ok  # None would mean: the check was skipped
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert loaded.get_base_model().model.layers[0].self_attn.q_proj.lora_A["default"].weight.device.type == "cpu"


def _gradients_after(model: nn.Module, evaluate_first: bool) -> dict[str, torch.Tensor | None]:
    x = inputs_for("llama")
    if evaluate_first:
        model.eval()
        with torch.no_grad():
            model(input_ids=x)  # bitsandbytes repacks 4-bit weights here on AVX512-BF16 CPUs
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _repacks() -> bool:
    layer = quantized_llama("nf4").model.layers[0].self_attn.q_proj.eval()
    with torch.no_grad():
        layer(torch.randn(2, 64))
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


@pytest.mark.parametrize("targets", [["q_proj", "v_proj", "down_proj"], "all-linear"])
def test_training_after_an_evaluation_keeps_every_gradient(targets: list[str] | str) -> None:
    if not _repacks():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks")
    base = prepare_model_for_kbit_training(quantized_llama("nf4"), use_gradient_checkpointing=False)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=targets))
    add_noise(model)
    reference = _gradients_after(copy.deepcopy(model), evaluate_first=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        after_eval = _gradients_after(model, evaluate_first=True)
    assert not [w for w in caught if "gemv_4bit" in str(w.message)], "backward ran through the inference kernel"
    largest = max(float(g.abs().max()) for g in reference.values() if g is not None)
    for name, grad in after_eval.items():
        assert grad is not None and bool(grad.abs().sum() > 0), f"{name} got no gradient"
        # the same up to the repacked weight's bf16 block scales
        torch.testing.assert_close(grad, reference[name], atol=0.25 * largest, rtol=0)


@pytest.mark.incumbent
@pytest.mark.filterwarnings("ignore:.*an autograd kernel was not registered:UserWarning")  # torch, on gemv_4bit
def test_incumbent_loses_gradients_when_training_after_an_evaluation() -> None:
    if not _repacks():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks")
    base = peft.prepare_model_for_kbit_training(quantized_llama("nf4"), use_gradient_checkpointing=False)
    model = hf_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    add_noise(model)
    missing = [n for n, g in _gradients_after(model, evaluate_first=True).items() if g is None]
    assert len(missing) == 8  # of 12: every adapter whose gradient passes a repacked layer


def test_an_adapter_trained_on_a_4bit_base_loads_onto_the_float_base_and_back(tmp_path: Path) -> None:
    config = LoraConfig(r=4, target_modules=["q_proj", "down_proj"], use_dora=True)
    quantized = get_peft_model(quantized_llama("nf4_double"), config)
    add_noise(quantized)
    quantized.save_pretrained(tmp_path / "from_4bit")
    on_float = PeftModel.from_pretrained(llama_for_quantization(), tmp_path / "from_4bit")
    saved = quantized.base_model.adapter_state_dict("default")
    loaded = on_float.base_model.adapter_state_dict("default")
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    on_float.save_pretrained(tmp_path / "from_float")
    again = PeftModel.from_pretrained(quantized_llama("nf4_double"), tmp_path / "from_float")
    assert all(torch.equal(t, saved[k]) for k, t in again.base_model.adapter_state_dict("default").items())
