"""IA3: vectors that rescale outputs (or inputs of feed-forward targets)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from peft_core import MergeError, PeftModel, get_peft_model, inject_adapter_in_model
from peft_ia3 import IA3Config, IA3Layer
from support.models import MLP, tiny_gpt2, token_ids

X = torch.arange(12).reshape(3, 4) % 20


def _ia3(**kwargs: object) -> IA3Config:
    return IA3Config(**({"target_modules": ["lin0", "lin1"], "feedforward_modules": ["lin1"]} | kwargs))


def test_output_and_input_scaling_match_the_formula() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    reference = copy.deepcopy(model)
    inject_adapter_in_model(
        IA3Config(target_modules=["0", "1"], feedforward_modules=["1"], init_ia3_weights=False), model
    )
    out_l, in_l = model[0].ia3_l["default"], model[1].ia3_l["default"]
    assert out_l.shape == (6, 1) and in_l.shape == (1, 6)
    x = torch.randn(2, 4)
    with torch.no_grad():
        hidden = reference[0](x) * out_l.flatten()
        expected = reference[1](hidden * in_l.flatten())
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_ones_at_init_give_base_outputs() -> None:
    base = MLP()
    with torch.no_grad():
        reference = base(X)
        assert torch.equal(get_peft_model(base, _ia3())(X), reference)


def test_merge_unmerge_round_trip() -> None:
    model = get_peft_model(MLP(), _ia3(init_ia3_weights=False))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, IA3Layer):
                layer.ia3_l["default"].copy_(torch.rand_like(layer.ia3_l["default"]) + 0.5)
        unmerged = model(X)
        weights = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
        model.merge_adapter()
        assert torch.allclose(model(X), unmerged, atol=1e-5)
        model.unmerge_adapter()
        for key, value in model.get_base_model().state_dict().items():
            assert torch.allclose(value, weights[key], atol=1e-6), key


def test_merge_with_a_zero_entry_is_refused_but_merge_and_unload_works() -> None:
    model = get_peft_model(MLP(), _ia3())
    with torch.no_grad():
        model.base_model.model.lin0.ia3_l["default"][3] = 0.0
        unmerged = model(X)
    with pytest.raises(MergeError, match="zero entries.*merge_and_unload"):
        model.merge_adapter()
    assert not model.base_model.model.lin0.merged
    with torch.no_grad():
        assert torch.allclose(model.merge_and_unload()(X), unmerged, atol=1e-6)


def test_save_load_and_per_row_adapters_on_gpt2(tmp_path: Path) -> None:
    base = tiny_gpt2()
    config = IA3Config(target_modules=["c_attn", "c_fc"], feedforward_modules=["c_fc"], init_ia3_weights=False)
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        model = get_peft_model(copy.deepcopy(base), config)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ids = token_ids(batch=2)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        assert torch.equal(loaded(input_ids=ids).logits, adapted)
        mixed = loaded(input_ids=ids, adapter_names=["default", "__base__"]).logits
        assert torch.allclose(mixed[0], adapted[0], atol=1e-5)
        assert torch.allclose(mixed[1], base(input_ids=ids).logits[1], atol=1e-5)


def test_training_lowers_the_loss() -> None:
    model = get_peft_model(MLP(), _ia3(target_modules=["lin0", "lin1", "head"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    target = torch.tensor([0, 1, 2])
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(X).mean(1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
