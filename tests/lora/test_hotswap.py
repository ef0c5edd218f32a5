"""hotswap_adapter: new weights in place, outputs as if freshly loaded, no recompilation."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.testing import CompileCounter

from peft_core import (
    AdapterLoadError,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    hotswap_adapter,
    prepare_for_hotswap,
)
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.models import MLP, tiny_gpt2, tiny_llama, token_ids

TARGETS = ["emb", "lin0", "lin1"]


def _save(tmp_path: Path, name: str, build: type[nn.Module] | object = MLP, **config: object) -> Path:
    """Train-free stand-in for a trained adapter: random factors, saved in the HF layout."""
    settings = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": False} | config
    torch.manual_seed(len(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build(), LoraConfig(**settings))  # type: ignore[operator]
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


def _fresh(base: nn.Module, path: Path) -> PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(copy.deepcopy(base), path).eval()


def _batch() -> torch.Tensor:
    return token_ids(batch=3, length=5, vocab=20)


def test_swapped_model_equals_the_freshly_loaded_one(tmp_path: Path) -> None:
    base = MLP()
    first, second = _save(tmp_path, "first"), _save(tmp_path, "second", lora_alpha=3, use_rslora=True)
    model = _fresh(base, first)
    params = {n: p for n, p in model.named_parameters()}
    hotswap_adapter(model, second, "default")
    with torch.no_grad():
        assert torch.allclose(model(_batch()), _fresh(base, second)(_batch()), atol=1e-6)
    assert all(p is params[n] for n, p in model.named_parameters())  # no re-injection
    assert model.peft_config["default"].use_rslora and model.peft_config["default"].inference_mode


def test_prepared_model_swaps_other_ranks_and_saves_the_true_rank(tmp_path: Path) -> None:
    base = MLP()
    small, large = _save(tmp_path, "small", r=2), _save(tmp_path, "large", r=6, lora_alpha=5)
    model = _fresh(base, small)
    reference = model(_batch()).detach()
    prepare_for_hotswap(model, max_rank=8)
    assert model.base_model.model.lin0.lora_A["default"].weight.shape == (8, 16)
    with torch.no_grad():
        assert torch.allclose(model(_batch()), reference, atol=1e-6)  # padding is exact
    hotswap_adapter(model, large)
    with torch.no_grad():
        assert torch.allclose(model(_batch()), _fresh(base, large)(_batch()), atol=1e-6)
    saved = get_peft_model_state_dict(model)
    assert saved["base_model.model.lin0.lora_A.weight"].shape == (6, 16)  # the adapter, not the padding
    hotswap_adapter(model, small)
    with torch.no_grad():
        assert torch.allclose(model(_batch()), reference, atol=1e-6)


@pytest.mark.parametrize("build", [MLP, tiny_gpt2, tiny_llama])
def test_compiled_model_does_not_recompile_for_another_rank(build: type[nn.Module], tmp_path: Path) -> None:
    targets = {"MLP": TARGETS, "tiny_gpt2": ["c_attn", "c_fc"], "tiny_llama": ["q_proj", "v_proj", "embed_tokens"]}
    name = getattr(build, "__name__", "")
    base = build()
    first = _save(tmp_path, "first", build=build, r=2, target_modules=targets[name])
    second = _save(tmp_path, "second", build=build, r=7, lora_alpha=3, target_modules=targets[name])
    model = _fresh(base, first)
    prepare_for_hotswap(model, max_rank=8)
    batch = token_ids(batch=2, length=5, vocab=20 if name == "MLP" else 64)
    counter = CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter)
    call = (lambda m: m(batch)) if name == "MLP" else (lambda m: m(input_ids=batch).logits)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        call(compiled)
        frames = counter.frame_count
        hotswap_adapter(model, second)
        swapped = call(compiled)
        assert counter.frame_count == frames  # error_on_recompile would also have raised
    with torch.no_grad():
        assert torch.allclose(swapped, call(_fresh(base, second)), atol=1e-5)


def test_without_preparation_a_larger_rank_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    base = MLP()
    model = _fresh(base, _save(tmp_path, "small", r=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterLoadError, match=r"rank 6 .* prepare_for_hotswap\(model, max_rank=6\)"):
        hotswap_adapter(model, _save(tmp_path, "large", r=6))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_for_other_modules_is_refused(tmp_path: Path) -> None:
    model = _fresh(MLP(), _save(tmp_path, "first"))
    with pytest.raises(AdapterLoadError, match="belong to no module of the adapter.*load_adapter"):
        hotswap_adapter(model, _save(tmp_path, "other", target_modules=["lin0", "head"]))
    with pytest.raises(AdapterLoadError, match="checkpoint has"):
        hotswap_adapter(model, _save(tmp_path, "fewer", target_modules=["lin0"]))


def test_ia3_vectors_swap_by_copy(tmp_path: Path) -> None:
    base = MLP()
    configs = [IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"], init_ia3_weights=False)] * 2
    paths = []
    for i, config in enumerate(configs):
        torch.manual_seed(i)
        get_peft_model(copy.deepcopy(base), config).save_pretrained(tmp_path / str(i))
        paths.append(tmp_path / str(i))
    model = _fresh(base, paths[0])
    hotswap_adapter(model, paths[1])
    with torch.no_grad():
        assert torch.allclose(model(_batch()), _fresh(base, paths[1])(_batch()), atol=1e-6)
    with pytest.raises(AdapterLoadError, match="cannot hotswap a LORA adapter into IA3 adapter"):
        hotswap_adapter(model, _save(tmp_path, "lora"))
