"""Conversion to LoRA: any adapter with weight updates becomes LoRA factors by truncated SVD, with the
per-layer relative error it reports; exact at full rank; the result loads in both libraries."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import peft
import pytest
import torch
from conversion_tuners import DenseConfig, DenseDelta, RowScaleConfig, registered
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core import ConfigError, PeftError, PeftModel, get_peft_model
from peft_core.cli import main
from peft_ia3 import IA3Config
from peft_lora import LoraConfig, convert_to_lora, lora_conversion, save_as_lora
from support.hf_peft import ATOL, add_noise, base_model, outputs
from support.models import MLP, ConvNet, tiny_gpt2, tiny_llama, token_ids


@pytest.fixture(autouse=True)
def _test_tuners() -> Iterator[None]:
    with registered():
        yield


def _lora(base: nn.Module, targets: list[str], r: int = 8) -> PeftModel:
    """A LoRA adapter with random factors on a copy of ``base``."""
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(copy.deepcopy(base), config)
    return model.eval()


def _loaded(base: nn.Module, directory: Path, library: str = "ours") -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "hf":
            return peft.PeftModel.from_pretrained(copy.deepcopy(base), directory).eval()
        return PeftModel.from_pretrained(copy.deepcopy(base), directory)


def _max_rank(model: PeftModel, path: str) -> int:
    weight = model.get_base_model().get_submodule(path).base_layer.weight
    return min(weight.shape[0], weight[0].numel())


def _singular_values(model: PeftModel) -> dict[str, Tensor]:
    found = {}
    for path, module in model.base_model.model.named_modules():
        if isinstance(module, DenseDelta) or hasattr(module, "lora_factors"):
            delta = module.delta_weight("default")
            matrix = delta.T if getattr(module, "fan_in_fan_out", False) or delta.shape[0] > 100 else delta.flatten(1)
            found[path] = torch.linalg.svdvals(matrix.float())
    return found


@pytest.mark.parametrize(
    ("build", "targets"),
    [(MLP, ["emb", "lin0", "lin1"]), (tiny_gpt2, ["c_attn", "c_fc"]), (lambda: ConvNet().eval(), ["conv1d", "conv2d"])],
    ids=["embedding-linear", "conv1d-transformers", "convolutions"],
)
def test_a_lora_of_rank_8_at_rank_8_is_exact_and_loads_in_both_libraries(
    build: object, targets: list[str], tmp_path: Path
) -> None:
    base = build()  # type: ignore[operator]
    model = _lora(base, targets)
    conversion = save_as_lora(tmp_path, model, rank=8)
    # Rank 8, or the layer's own rank where lower (a 6-channel conv has rank <= 6): exact either way.
    assert all(layer.rank == min(8, _max_rank(model, layer.path)) for layer in conversion.layers)
    assert conversion.max_relative_error < 1e-6
    x = torch.randn(2, 4, 8, 8) if isinstance(base, ConvNet) else token_ids(batch=2, length=6, vocab=20)
    run = (lambda m: m(x)) if isinstance(base, MLP | ConvNet) else (lambda m: outputs(m, x))
    with model.disable_adapter(), torch.no_grad():
        original_base = run(model)
    with torch.no_grad():
        expected = run(model)
        assert not torch.allclose(expected, original_base, atol=1e-3), "a void test"
        for library in ("ours", "hf"):
            torch.testing.assert_close(run(_loaded(base, tmp_path, library)), expected, atol=1e-4, rtol=0)


def test_lower_rank_and_energy_report_the_dropped_singular_values(tmp_path: Path) -> None:
    base = tiny_llama()
    model = _lora(base, ["q_proj", "down_proj"])
    spectra = _singular_values(model)
    low = lora_conversion(model, rank=3)
    for layer in low.layers:
        s = spectra[layer.path].double()
        assert layer.rank == 3
        assert abs(layer.relative_error - float(s[3:].square().sum().sqrt() / s.square().sum().sqrt())) < 1e-6
    by_energy = lora_conversion(model, energy=0.9)
    for layer in by_energy.layers:
        kept = spectra[layer.path].double().square().cumsum(0) / spectra[layer.path].double().square().sum()
        assert kept[layer.rank - 1] >= 0.9 - 1e-6 and (layer.rank == 1 or kept[layer.rank - 2] < 0.9)
    assert len({layer.rank for layer in by_energy.layers}) > 1  # per-layer ranks: rank_pattern in the config
    assert by_energy.config.rank_pattern
    save_as_lora(tmp_path, model, rank=0.9)  # a float is an energy threshold, as in Hugging Face PEFT
    for library in ("ours", "hf"):
        reloaded = _loaded(base, tmp_path, library)
        ranks = {p: m.r["default"] for p, m in reloaded.named_modules() if hasattr(m, "lora_A") and hasattr(m, "r")}
        assert sorted(ranks.values()) == sorted(layer.rank for layer in by_energy.layers), library


def test_same_factors_as_the_incumbents_convert_to_lora(tmp_path: Path) -> None:
    base = tiny_llama()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(
            copy.deepcopy(base), peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        add_noise(theirs)
        theirs.save_pretrained(tmp_path)
        from peft.tuners.lora.conversion import convert_to_lora as hf_convert

        _, expected = hf_convert(theirs, rank=4)
    ours = _loaded(base, tmp_path)
    _, tensors = convert_to_lora(ours, rank=4)
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(tensors[key], value, atol=1e-6, rtol=1e-5, msg=key)


def test_an_additive_test_layer_converts_through_its_delta_weight() -> None:
    model = get_peft_model(MLP(), DenseConfig(target_modules=["lin0", "lin1"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.base_model.model.modules():
            if isinstance(layer, DenseDelta):  # rank 3 exactly
                u, v = torch.randn(16, 3, generator=generator), torch.randn(3, 16, generator=generator)
                layer.dense_delta["default"].copy_(u @ v)
    exact = lora_conversion(model, rank=3)
    assert [layer.rank for layer in exact.layers] == [3, 3] and exact.max_relative_error < 1e-6
    assert lora_conversion(model, energy=1.0).layers[0].rank == 3  # zero singular values hold no energy
    lossy = lora_conversion(model, rank=2)
    assert all(0.05 < layer.relative_error < 1 for layer in lossy.layers)


def test_a_non_additive_layer_converts_from_its_merged_weights_not_an_inherited_delta() -> None:
    model = get_peft_model(MLP(), RowScaleConfig(target_modules=["lin0"]))
    layer = model.base_model.model.lin0
    with torch.no_grad():
        layer.dense_delta["default"].copy_(torch.linspace(-0.5, 0.5, 16).view(16, 1))
    conversion = lora_conversion(model, rank=16)
    tensors = conversion.tensors
    b, a = tensors["base_model.model.lin0.lora_B.weight"], tensors["base_model.model.lin0.lora_A.weight"]
    expected = layer.merged_weights(["default"]).weights["weight"] - layer.base_layer.weight
    torch.testing.assert_close(b @ a, expected, atol=1e-6, rtol=0)


def test_ia3_converts_with_the_bias_update_in_lora_bias(tmp_path: Path) -> None:
    model = get_peft_model(tiny_llama(), IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]))
    add_noise(model)
    conversion = lora_conversion(model, rank=32)  # full rank: the input scaling is exact
    assert conversion.max_relative_error < 1e-6 and not conversion.config.lora_bias
    base = MLP()
    output_scaled = get_peft_model(copy.deepcopy(base), IA3Config(target_modules=["lin0", "lin1"]))  # scales biases
    add_noise(output_scaled)
    converted = save_as_lora(tmp_path, output_scaled, rank=16)
    assert converted.config.lora_bias and converted.max_relative_error < 1e-6
    x = token_ids(batch=2, length=6, vocab=20)
    with torch.no_grad():
        expected = output_scaled(x)
        for library in ("ours", "hf"):
            torch.testing.assert_close(_loaded(base, tmp_path, library)(x), expected, atol=1e-5, rtol=0)


def test_bad_requests_are_clear_errors() -> None:
    model = _lora(MLP(), ["lin0"])
    with pytest.raises(ConfigError, match="either rank.*or energy"):
        lora_conversion(model, rank=4, energy=0.9)
    with pytest.raises(ConfigError, match="energy=1.5"):
        lora_conversion(model, energy=1.5)
    with pytest.raises(PeftError, match="no adapter 'other'"):
        lora_conversion(model, "other", rank=4)
    trained_bias = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"], bias="all"))
    with pytest.raises(PeftError, match="trains biases"):
        lora_conversion(trained_bias, rank=4)


def test_modules_to_save_are_carried_over(tmp_path: Path) -> None:
    base = MLP()
    config = IA3Config(target_modules=["lin1"], feedforward_modules=["lin1"], modules_to_save=["head"])
    model = get_peft_model(copy.deepcopy(base), config)
    add_noise(model)
    save_as_lora(tmp_path, model, rank=16)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["head"]
    x = token_ids(batch=2, length=6, vocab=20)
    with torch.no_grad():
        torch.testing.assert_close(_loaded(base, tmp_path)(x), model(x), atol=ATOL, rtol=0)


def test_the_cli_converts_an_adapter_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = base_model("llama")
    base.save_pretrained(tmp_path / "base")  # type: ignore[operator]
    model = _lora(base, ["q_proj", "v_proj"], r=8)
    model.save_pretrained(tmp_path / "adapter")
    argv = ["convert", "--to", "lora", "--rank", "8", str(tmp_path / "adapter"), str(tmp_path / "out")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--base", str(tmp_path / "base")]) == 0
    captured = capsys.readouterr()
    assert "model.layers.0.self_attn.q_proj  rank     8  relative error" in captured.out
    assert "wrote a LoRA adapter of 4 layers (total rank 32" in captured.out
    assert "convert to LoRA: 100%" in captured.err  # the tqdm bar
    assert set(load_file(tmp_path / "out" / "adapter_model.safetensors")) == {
        f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{f}.weight"
        for i in (0, 1)
        for m in ("q_proj", "v_proj")
        for f in "AB"
    }
    x = token_ids()
    torch.testing.assert_close(outputs(_loaded(base, tmp_path / "out", "hf"), x), outputs(model, x), atol=1e-4, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 1  # OUT is not empty now
    assert "exists and is not empty; pass --force" in capsys.readouterr().err


def test_a_trainable_adapter_converts_to_plain_tensors_without_a_graph() -> None:
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    assert any(p.requires_grad for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no autograd warning about reading a grad-requiring SVD input
        _, tensors = convert_to_lora(model, 2)
    assert tensors and not any(t.requires_grad or t.grad_fn is not None for t in tensors.values())
