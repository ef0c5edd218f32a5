"""The v2 lifecycle hooks end to end, through a test plugin (peft-scale-reg): ``adapter_loss``
added to the loss, ``on_step_end`` reached by ``update_and_allocate`` and by ``PeftTrainer``,
and merge state returned by a layer and handed back to its unmerge."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from peft_core import PeftModel, get_peft_model
from peft_core.testing import TunerConformance
from peft_scale_reg import ScaleLayer, ScaleRegConfig
from support.models import MLP, tiny_llama, token_ids

IDS = token_ids(batch=3, length=6)
TARGETS = ["q_proj", "v_proj"]


class TestScaleRegConformance(TunerConformance):
    config = ScaleRegConfig(target_modules=["lin0", "lin1"])

    def make_model(self) -> nn.Module:
        return MLP()

    def make_inputs(self) -> Any:
        return torch.arange(12).reshape(3, 4) % 20


def _model(reg_weight: float = 0.1) -> PeftModel:
    model = get_peft_model(tiny_llama(), ScaleRegConfig(target_modules=TARGETS, reg_weight=reg_weight))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    return model


def _regulariser(model: PeftModel, weight: float) -> torch.Tensor:
    scales = [p for n, p in model.named_parameters() if "scale_g" in n]
    assert len(scales) == 4  # q_proj and v_proj of 2 layers
    return weight * sum(((g - 1) ** 2).sum() for g in scales)  # type: ignore[return-value]


def test_adapter_loss_is_added_to_the_loss_in_training_only() -> None:
    model = _model(reg_weight=0.1)
    with model.disable_adapter():
        model.train()
        plain_loss = model(input_ids=IDS, labels=IDS).loss  # disabled adapters: no hooks, the model's loss
    model.train()
    with torch.no_grad():
        adapted = model.get_base_model()(input_ids=IDS, labels=IDS).loss  # the adapters, without the hook
        torch.testing.assert_close(
            model(input_ids=IDS, labels=IDS).loss, adapted + _regulariser(model, 0.1), atol=1e-6, rtol=0
        )
    assert not torch.equal(plain_loss, adapted)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS, labels=IDS).loss, adapted, atol=1e-6, rtol=0)


def test_the_regulariser_has_gradients() -> None:
    model = _model(reg_weight=1.0)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    with_reg = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.get_base_model()(input_ids=IDS, labels=IDS).loss.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(with_reg[name] - param.grad, 2 * (param - 1), atol=1e-5, rtol=0)


def test_update_and_allocate_calls_on_step_end_with_the_step() -> None:
    model = _model()
    model.update_and_allocate(7)
    layers = [m for m in model.modules() if isinstance(m, ScaleLayer)]
    assert [layer.last_step for layer in layers] == [{"default": 7}] * 4
    for layer in layers:  # projected into 1 +- max_change
        g = layer.scale_g["default"]
        assert float(g.min()) >= 0.5 and float(g.max()) <= 1.5 and float((g - 1).abs().max()) == 0.5


def test_peft_trainer_calls_on_step_end_after_every_optimizer_step(tmp_path: Any) -> None:
    from transformers import TrainingArguments

    from peft_core.integrations.trainer import PeftTrainer

    model = _model()
    steps: list[int] = []
    original = model.update_and_allocate
    model.update_and_allocate = lambda step: (steps.append(step), original(step))[1]  # type: ignore[method-assign]
    data = [{"input_ids": ids, "labels": ids} for ids in token_ids(batch=6, length=6, seed=1)]
    args = TrainingArguments(
        str(tmp_path), per_device_train_batch_size=2, max_steps=3, report_to=[], save_strategy="no", use_cpu=True
    )
    PeftTrainer(model=model, args=args, train_dataset=data).train()
    assert steps == [0, 1, 2]
    assert all(float((p - 1).abs().max()) <= 0.5 + 1e-6 for n, p in model.named_parameters() if "scale_g" in n)


def test_the_unmerge_gets_the_merge_state_back_so_later_changes_cannot_corrupt_it() -> None:
    model = _model()
    original = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer" in k}
    with torch.no_grad():
        merged_out = copy.deepcopy(model)(input_ids=IDS).logits
        model.merge_adapter()
        torch.testing.assert_close(model(input_ids=IDS).logits, merged_out, atol=1e-5, rtol=0)
        for name, param in model.named_parameters():
            if "scale_g" in name:
                param.mul_(3.0)  # the adapter changes while merged (training, a load)
    model.unmerge_adapter()
    restored = model.get_base_model().state_dict()
    assert all(torch.equal(restored[k], v) for k, v in original.items())
