"""LoRA on grouped convolutions moves between Hugging Face PEFT and peft-core with identical numbers.

Each case: saved by one library, loaded by the other; checkpoint tensors equal, outputs
equal (fp32, atol 1e-5) with the adapter on and off; merging refused by both (the update
reads every input channel, which a grouped weight cannot hold); the same gradients, the
same initial factors at the same seed, the same per-row (mixed adapter) batches.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core import MergeError, PeftModel
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, hf_load, hf_model, our_model
from support.models import GroupedConvNet

pytestmark = pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd layer with groups > 1")

ALL = ["conv1d", "conv2d", "depthwise", "conv3d"]
OPTIONS: list[dict[str, object]] = [
    {"target_modules": ALL, "rank_pattern": {"depthwise": 8}},
    {"target_modules": ["conv2d", "depthwise"], "r": 8, "lora_alpha": 4, "use_rslora": True},
    {"target_modules": ["conv1d", "conv3d"], "lora_bias": True, "modules_to_save": ["head"]},
    {"target_modules": ["conv2d"], "lora_dropout": 0.2},
]
IDS = ["all_rank_pattern", "rslora_depthwise", "lora_bias_modules_to_save", "dropout"]


def _inputs() -> Tensor:
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def _configs(options: dict[str, object]) -> tuple[LoraConfig, peft.LoraConfig]:
    full: dict[str, object] = {"r": 4, "lora_alpha": 8, "init_lora_weights": False} | options
    return LoraConfig(**full), peft.LoraConfig(**full)  # type: ignore[arg-type]


@torch.no_grad()
def _out(model: nn.Module, x: Tensor, **kwargs: object) -> Tensor:
    result: Tensor = model(x, **kwargs)
    return result


def _check_same(ours: PeftModel, theirs: peft.PeftModel, base: nn.Module) -> float:
    """Equal with the adapter on and off; both refuse to merge and change nothing. The largest difference."""
    x = _inputs()
    expected = _out(theirs, x)
    assert not torch.allclose(expected, _out(base, x), atol=1e-3), "the adapter changes nothing: a void test"
    worst = (_out(ours, x) - expected).abs().max().item()
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
    with ours.disable_adapter(), theirs.disable_adapter():
        torch.testing.assert_close(_out(ours, x), _out(theirs, x), atol=ATOL, rtol=0)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(MergeError, match=r"grouped convolution \(groups=\d\) cannot be merged.*keep the adapter"):
        ours.merge_adapter()
    with pytest.raises(NotImplementedError, match="groups > 1"):
        theirs.merge_adapter()
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items()), "a refused merge changed weights"
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
    return worst


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_hf_saves_we_load(options: dict[str, object], tmp_path: Path) -> None:
    base = GroupedConvNet().eval()
    theirs = hf_model(base, _configs(options)[1]).eval()
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    mine = ours.base_model.adapter_state_dict("default") | {
        k: v for k, v in ours.state_dict().items() if "modules_to_save" in k
    }
    mine = {k.replace(".modules_to_save.default.", "."): v for k, v in mine.items()}
    assert set(saved) <= set(mine)
    assert all(torch.equal(mine[k], saved[k]) for k in saved), "a tensor was not loaded as saved"
    _check_same(ours, theirs, base)


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_we_save_hf_loads(options: dict[str, object], tmp_path: Path) -> None:
    base = GroupedConvNet().eval()
    ours = our_model(base, _configs(options)[0])
    add_noise(ours)
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Adapter 'default': .* invalid shape")  # its ZeRO-3 check on lora_B.bias
        theirs = hf_load(base, tmp_path).eval()
    held = peft.get_peft_model_state_dict(theirs)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert set(saved) == set(held)
    assert all(torch.equal(held[k], t) for k, t in saved.items())
    assert any(t.shape[1] < 4 for k, t in saved.items() if k.endswith("lora_B.weight")), "no grouped B saved"
    _check_same(ours.eval(), theirs, base)


def _hf_key(name: str) -> str:
    return name.replace(".default.", ".")


def test_training_gives_the_same_gradients_as_hf(tmp_path: Path) -> None:
    base = GroupedConvNet().eval()
    theirs = hf_model(base, _configs(OPTIONS[0])[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    for model in (ours, theirs):
        model.train()
        model(_inputs()).pow(2).mean().backward()
    expected = {_hf_key(n): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    got = {k: t.grad for k, t in ours.base_model.adapter_state_dict("default").items()}
    assert set(got) == set(expected) and len(got) == 8
    for key, grad in got.items():
        assert grad is not None and expected[key] is not None and grad.abs().max() > 0, key
        torch.testing.assert_close(grad, expected[key], atol=1e-6, rtol=1e-4, msg=key)


def test_dropout_in_training_matches_hf_mask_for_mask(tmp_path: Path) -> None:
    base = GroupedConvNet().eval()
    theirs = hf_model(base, _configs(OPTIONS[3])[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    results = []
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(7)
        results.append(model(_inputs()).detach())
    torch.testing.assert_close(results[0], results[1], atol=ATOL, rtol=0)
    assert not torch.allclose(results[0], _out(ours.eval(), _inputs()), atol=1e-4), "dropout had no effect"


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_same_seed_gives_hf_initial_factors(init: bool | str) -> None:
    base = GroupedConvNet()
    options: dict[str, object] = {"target_modules": ALL, "rank_pattern": {"depthwise": 8}, "init_lora_weights": init}
    torch.manual_seed(3)
    theirs = hf_model(base, peft.LoraConfig(r=4, **options))  # type: ignore[arg-type]
    torch.manual_seed(3)
    ours = our_model(base, LoraConfig(r=4, **options))  # type: ignore[arg-type]
    held = peft.get_peft_model_state_dict(theirs)
    mine = ours.base_model.adapter_state_dict("default")
    assert set(mine) == set(held)
    assert all(torch.equal(mine[k], held[k]) for k in held)


def test_per_row_batches_match_hf(tmp_path: Path) -> None:
    base = GroupedConvNet().eval()
    theirs = hf_model(base, _configs(OPTIONS[0])[1])
    theirs.add_adapter("other", _configs({"target_modules": ["conv2d", "conv3d"], "r": 2})[1])
    add_noise(theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ours.load_adapter(tmp_path / "other", "other")
    names = ["default", "other", "__base__"]
    expected = _out(theirs.eval(), _inputs(), adapter_names=names)
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)
    torch.testing.assert_close(_out(ours, _inputs(), adapter_names=names), expected, atol=ATOL, rtol=0)
