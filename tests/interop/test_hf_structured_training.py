"""Training LoHa, LoKr and OFT here and in Hugging Face PEFT: same outputs, gradients and weights.

Both libraries start from one saved adapter and run the same seeded steps in training mode,
dropouts included (LoHa's and LoKr's ``rank_dropout``/``module_dropout`` draw their random
numbers in Hugging Face PEFT's order), so forward outputs, every adapter gradient and the
weights after the optimizer steps (COFT's in-place projection included) must agree.

One exception, tested apart: LoHa with ``use_effective_conv2d``, whose gradients for
``hada_w1_a``/``hada_w2_a`` Hugging Face PEFT computes wrongly (a hand-written backward);
ours are the formula's (gradcheck).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.loha.layer import HadaWeightCP
from torch import nn

from peft_loha import LoHaConfig
from peft_loha.layer import LoHaLayer
from support.hf_peft import Case, inputs_for, our_model, saved_by_hf

LLAMA = ["q_proj", "v_proj", "down_proj"]

CASES = [
    Case("llama", "loha", "dropouts", {"target_modules": LLAMA, "rank_dropout": 0.3, "module_dropout": 0.3}),
    Case("convnet", "loha", "conv_dropouts", {"target_modules": ["conv1d", "conv2d", "head"], "rank_dropout": 0.4}),
    Case("llama", "lokr", "dropouts", {"target_modules": LLAMA, "r": 2, "rank_dropout": 0.3, "module_dropout": 0.3}),
    Case("llama", "lokr", "dropout_scale", {"target_modules": LLAMA, "rank_dropout": 0.5, "rank_dropout_scale": True}),
    Case("convnet", "lokr", "conv", {"target_modules": ["conv1d", "conv2d"], "r": 1, "decompose_both": True}),
    Case("llama", "oft", "linear", {"target_modules": LLAMA, "oft_block_size": 8}),
    Case("llama", "oft", "coft_exact", {"target_modules": LLAMA, "oft_block_size": 4, "coft": True, "eps": 0.05}),
    Case("llama", "oft", "block_share", {"target_modules": LLAMA, "oft_block_size": 8, "block_share": True}),
    Case("convnet", "oft", "conv2d", {"target_modules": ["conv2d", "head"], "oft_block_size": 4}),
]


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    output = model(x) if x.is_floating_point() else model(input_ids=x).logits
    return output.float().pow(2).mean()


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_seeded_training_steps_match_hugging_face_peft(case: Case, tmp_path: Path) -> None:
    _, theirs, ours = saved_by_hf(case, tmp_path, is_trainable=True)
    mine, reference = _trainable(ours), _trainable(theirs)
    assert set(mine) == set(reference), "different trainable parameters"
    optimizers = [torch.optim.SGD(list(p.values()), lr=0.5) for p in (mine, reference)]
    x = inputs_for(case.model)
    for step in range(2):
        losses = []
        for model in (ours, theirs):
            model.train()
            torch.manual_seed(step)  # the same dropout draws in both
            loss = _loss(model, x)
            loss.backward()  # type: ignore[no-untyped-call]
            losses.append(loss.detach())
        torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-5)
        for name, param in mine.items():  # None for both where module dropout skipped the adapter
            assert (param.grad is None) == (reference[name].grad is None), name
            if param.grad is not None:
                torch.testing.assert_close(param.grad, reference[name].grad, atol=1e-6, rtol=1e-4, msg=name)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    for name, param in mine.items():
        torch.testing.assert_close(param, reference[name], atol=1e-6, rtol=1e-4, msg=name)


def _effective_conv_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 3, 3, 3), (3, 5), (3, 4), (3, 3, 3, 3), (3, 5), (3, 4)]  # t1, w1_a, w1_b, t2, w2_a, w2_b
    return [torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes]


def test_loha_effective_conv_gradients_are_the_formula_s() -> None:
    """Our LoHa CP kernel (hada_t*) differentiates by autograd: gradcheck in fp64 passes."""
    model = our_model(
        nn.Sequential(nn.Conv2d(4, 5, 3)), LoHaConfig(r=3, target_modules=["0"], use_effective_conv2d=True)
    )
    layer = model.get_base_model()[0]
    assert isinstance(layer, LoHaLayer)
    layer.double()
    names = ("hada_t1", "hada_w1_a", "hada_w1_b", "hada_t2", "hada_w2_a", "hada_w2_b")
    containers = [getattr(layer, n) for n in names]

    def delta(*tensors: torch.Tensor) -> torch.Tensor:
        for container, tensor in zip(containers, tensors, strict=True):
            container._parameters["default"] = tensor  # the inputs of gradcheck, in place of the parameters
        return layer.delta_weight("default")

    assert torch.autograd.gradcheck(delta, _effective_conv_inputs())


@pytest.mark.incumbent
def test_hugging_face_peft_effective_conv_loha_gradients_are_wrong() -> None:
    """What the test above rules out: PEFT's hand-written backward fails gradcheck (hada_w1_a, hada_w2_a)."""
    one = torch.tensor(1.0, dtype=torch.float64)
    assert not torch.autograd.gradcheck(
        lambda *a: HadaWeightCP.apply(*a, one), _effective_conv_inputs(), raise_exception=False
    )
