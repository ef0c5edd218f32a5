"""LoRA on ``nn.MultiheadAttention`` moves between Hugging Face PEFT and peft-core with identical numbers.

Each case: saved by one library, loaded by the other; outputs equal (fp32, atol 1e-5) with
the adapter on and off, merged and unmerged; the checkpoint tensors equal; the same
gradients; the same initial factors at the same seed. One deliberate difference: inside
``nn.TransformerEncoderLayer`` in eval mode the incumbent's adapter is skipped (PyTorch's
fused path reads the base weights); ours is applied.
"""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core import PeftModel
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, hf_load, hf_model, our_model
from support.models import AttentionNet, EncoderNet

OPTIONS: list[dict[str, object]] = [
    {"target_modules": ["mha"]},
    {"target_modules": ["mha", "lin0"], "lora_alpha": 4, "use_rslora": True},
    {"target_modules": ["mha"], "modules_to_save": ["lin0"]},
]
IDS = ["mha", "mha_lin0_rslora", "mha_modules_to_save"]
KEYS = {
    "base_model.model.mha.lora_A.weight": (4, 10),
    "base_model.model.mha.lora_B.weight": (30, 4),
    "base_model.model.mha.base_layer.out_proj.lora_A.weight": (4, 10),
    "base_model.model.mha.base_layer.out_proj.lora_B.weight": (10, 4),
}


def _inputs() -> Tensor:
    return torch.randn(5, 3, 10, generator=torch.Generator().manual_seed(0))  # (seq, batch, embed)


def _configs(options: dict[str, object]) -> tuple[LoraConfig, peft.LoraConfig]:
    full: dict[str, object] = {"r": 4, "lora_alpha": 8, "init_lora_weights": False} | options
    return LoraConfig(**full), peft.LoraConfig(**full)  # type: ignore[arg-type]


@torch.no_grad()
def _out(model: nn.Module, x: Tensor) -> Tensor:
    result: Tensor = model(x)
    return result


def _check_same(ours: nn.Module, theirs: nn.Module, base: nn.Module, x: Tensor) -> float:
    """Equal on, off, merged, unmerged; returns the largest difference seen."""
    expected = _out(theirs, x)
    assert not torch.allclose(expected, _out(base, x), atol=1e-3), "the adapter changes nothing: a void test"
    worst = (_out(ours, x) - expected).abs().max().item()
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
    with ours.disable_adapter(), theirs.disable_adapter():  # type: ignore[operator]
        torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)
    ours.merge_adapter()  # type: ignore[operator]
    theirs.merge_adapter()  # type: ignore[operator]
    worst = max(worst, (_out(ours, x) - _out(theirs, x)).abs().max().item())
    torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
    ours.unmerge_adapter()  # type: ignore[operator]
    theirs.unmerge_adapter()  # type: ignore[operator]
    torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)
    return worst


@pytest.mark.filterwarnings("ignore:.*(merged|unmerged).*:UserWarning")
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_hf_saves_we_load(options: dict[str, object], tmp_path: Path) -> None:
    base = AttentionNet().eval()
    theirs = hf_model(base, _configs(options)[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    mine = ours.base_model.adapter_state_dict("default")
    assert {k: tuple(saved[k].shape) for k in KEYS} == KEYS
    assert all(torch.equal(mine[k], saved[k]) for k in saved), "a tensor was not loaded as saved"
    _check_same(ours, theirs, base, _inputs())


@pytest.mark.filterwarnings("ignore:.*(merged|unmerged).*:UserWarning")
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_we_save_hf_loads(options: dict[str, object], tmp_path: Path) -> None:
    base = AttentionNet().eval()
    ours = our_model(base, _configs(options)[0])
    add_noise(ours)
    ours.save_pretrained(tmp_path)
    theirs = hf_load(base, tmp_path)
    held = peft.get_peft_model_state_dict(theirs)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert set(saved) == set(held)
    assert all(torch.equal(held[k], t) for k, t in saved.items())
    assert theirs.peft_config["default"].to_dict()["target_modules"] == set(options["target_modules"])  # type: ignore[arg-type]
    _check_same(ours, theirs, base, _inputs())


@pytest.mark.filterwarnings("ignore:.*(merged|unmerged).*:UserWarning")
def test_merge_and_unload_gives_hf_weights(tmp_path: Path) -> None:
    base = AttentionNet().eval()
    theirs = hf_model(base, _configs({"target_modules": ["mha"]})[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    mine, reference = ours.merge_and_unload().state_dict(), theirs.merge_and_unload().state_dict()
    assert set(mine) == set(reference) == set(base.state_dict())
    for key in reference:
        torch.testing.assert_close(mine[key], reference[key], atol=1e-6, rtol=0, msg=key)
    assert not torch.equal(mine["mha.out_proj.weight"], base.state_dict()["mha.out_proj.weight"])


def _hf_key(name: str) -> str:
    return name.replace(".default.", ".")


def test_training_gives_the_same_gradients_as_hf(tmp_path: Path) -> None:
    base = AttentionNet().eval()
    theirs = hf_model(base, _configs({"target_modules": ["mha"]})[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    x = _inputs()
    for model in (ours, theirs):
        model.train()
        model(x).pow(2).mean().backward()
    expected = {_hf_key(n): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    got = {k: t.grad for k, t in ours.base_model.adapter_state_dict("default").items()}
    assert set(got) == set(expected) == set(KEYS)
    for key, grad in got.items():
        assert grad is not None and expected[key] is not None, key
        assert grad.abs().max() > 0, key
        torch.testing.assert_close(grad, expected[key], atol=1e-6, rtol=1e-4, msg=key)


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_same_seed_gives_hf_initial_factors(init: bool | str) -> None:
    base = AttentionNet()
    torch.manual_seed(3)
    theirs = hf_model(base, peft.LoraConfig(target_modules=["mha", "lin0"], init_lora_weights=init, r=4))
    torch.manual_seed(3)
    ours = our_model(base, LoraConfig(target_modules=["mha", "lin0"], init_lora_weights=init, r=4))
    torch.manual_seed(4)
    theirs.add_adapter("second", peft.LoraConfig(target_modules=["mha"], init_lora_weights=init, r=2))
    torch.manual_seed(4)
    ours.add_adapter("second", LoraConfig(target_modules=["mha"], init_lora_weights=init, r=2))
    for name in ("default", "second"):
        held = peft.get_peft_model_state_dict(theirs, adapter_name=name)
        mine = ours.base_model.adapter_state_dict(name)
        assert set(mine) == set(held)
        assert all(torch.equal(mine[k], held[k]) for k in held), name


@pytest.mark.filterwarnings("ignore:.*(merged|unmerged).*:UserWarning")
def test_two_active_adapters_as_in_hf(tmp_path: Path) -> None:
    base = AttentionNet().eval()
    theirs = hf_model(base, _configs({"target_modules": ["mha"]})[1])
    theirs.add_adapter("second", _configs({"target_modules": ["mha"], "r": 2})[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ours.load_adapter(tmp_path / "second", "second")
    ours.set_adapter(["default", "second"])
    theirs.base_model.set_adapter(["default", "second"])
    x = _inputs()
    torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)
    ours.merge_adapter(["default", "second"])
    theirs.merge_adapter(["default", "second"])
    torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)


def test_encoder_layer_in_eval_applies_the_adapter_where_hf_skips_it(tmp_path: Path) -> None:
    """Deliberate difference: PyTorch's fused encoder path would read the base weights (the incumbent's
    adapter then has no effect in eval mode); here eval computes what training mode computes."""
    base = EncoderNet().eval()
    theirs = hf_model(base, peft.LoraConfig(target_modules=["self_attn"], init_lora_weights=False, r=2))
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    theirs.train()  # dropout=0: training mode is the same math without the fused path
    reference = theirs(x).detach()
    assert not torch.allclose(reference, _out(base, x), atol=1e-3)
    torch.testing.assert_close(_out(ours, x), reference, atol=ATOL, rtol=0)
    theirs.eval()
    torch.testing.assert_close(_out(theirs, x), _out(base, x), atol=1e-6, rtol=0)  # the incumbent's skip


class _MaskedAttention(nn.Module):
    """Batch-first attention called with a padding mask, a causal mask and need_weights=False."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True, bias=False, add_bias_kv=True)

    def forward(self, x: Tensor) -> Tensor:
        padding = torch.zeros(x.shape[:2], dtype=torch.bool)
        padding[0, -2:] = True
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        out, weights = self.mha(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=False)
        assert weights is None
        result: Tensor = out
        return result


def test_the_attention_arguments_pass_through_as_in_hf(tmp_path: Path) -> None:
    base = _MaskedAttention().eval()
    theirs = hf_model(base, peft.LoraConfig(target_modules=["mha"], init_lora_weights=False, r=2))
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    expected = _out(theirs, x)
    assert not torch.allclose(expected, _out(base, x), atol=1e-3)
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
