"""AdaLoRA trains as the incumbent does: 30 steps from the same seed give the same rank
patterns, the same masked triplets and the same outputs at every step.

Tolerance: fp32 outputs within 1e-5 (absolute, logits of order 1) at every step; rank
patterns and masks exactly equal. Measured: the largest logit difference over the 30
steps is 3.4e-7 (GPT-2, Llama and GPT-2 with adapter dropout alike); the two libraries
differ only in rounding (one ``addmm`` against three passes, ``lerp`` against two
multiplies).
"""

from __future__ import annotations

import pytest
import torch

from support.adalora import Trainer, base, logits, options, pattern, twins, zero_triplets

STEPS = 30
OUTPUT_ATOL = 1e-5


@pytest.mark.parametrize(
    ("model_name", "extra"),
    [("gpt2", {}), ("llama", {}), ("gpt2", {"lora_dropout": 0.1, "orth_reg_weight": 0.2})],
    ids=["gpt2-conv1d", "llama-linear", "gpt2-dropout"],
)
def test_thirty_steps_match_the_incumbent_step_by_step(model_name: str, extra: dict[str, object]) -> None:
    theirs, ours = twins(base(model_name), **options(model_name, **extra))
    hf_run, our_run = Trainer(theirs), Trainer(ours)
    patterns_seen = 0
    for step in range(STEPS):
        hf_loss, our_loss = hf_run.train_step(), our_run.train_step()
        assert our_loss == pytest.approx(hf_loss, abs=1e-5), f"step {step}: loss"
        assert pattern(ours) == pattern(theirs), f"step {step}: rank_pattern"
        assert zero_triplets(ours) == zero_triplets(theirs), f"step {step}: masked triplets"
        difference = (logits(ours, our_run.ids) - logits(theirs, hf_run.ids)).abs().max().item()
        assert difference <= OUTPUT_ATOL, f"step {step}: outputs differ by {difference:.2e}"
        patterns_seen += pattern(ours) is not None
    final = pattern(ours)
    assert final is not None and patterns_seen == STEPS - 6  # the first pattern comes at step 6 (after tinit, deltaT 3)
    kept = sum(sum(mask) for mask in final.values())
    assert kept == 3 * len(final)  # target_r triplets per module on average, once final
    assert any(not all(mask) for mask in final.values()), "nothing was pruned: a void test"


def test_the_loss_carries_the_incumbents_orthogonality_term() -> None:
    theirs, ours = twins(base("llama"), **options("llama", orth_reg_weight=0.7))
    ids = Trainer(ours).ids
    for model in (theirs, ours):
        model.train()
    torch.manual_seed(0)
    hf_loss = theirs(input_ids=ids, labels=ids).loss
    torch.manual_seed(0)
    our_loss = ours(input_ids=ids, labels=ids).loss
    with ours.disable_adapter():
        task_only = ours(input_ids=ids, labels=ids).loss  # adapters off: no regulariser, E = 0 anyway
    assert float(our_loss - task_only) > 1.0, "no regulariser was added: a void test"
    torch.testing.assert_close(our_loss, hf_loss, atol=1e-5, rtol=0)
    hf_loss.backward()
    our_loss.backward()
    hf_grads = {n.replace(".default", ""): p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    our_grads = {n.replace(".default", ""): p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert set(our_grads) == set(hf_grads)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, hf_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_a_half_precision_base_computes_as_the_incumbent() -> None:
    model = base("llama").to(torch.bfloat16)
    theirs, ours = twins(model, **options("llama"))
    with torch.no_grad():
        for twin in (theirs, ours):  # the same non-trivial E (zero at init) in both
            for name, param in twin.named_parameters():
                if ".lora_E" in name:
                    param.fill_(0.5)
    ids = Trainer(ours).ids
    ours_logits, their_logits = logits(ours, ids), logits(theirs, ids)
    assert ours_logits.dtype == their_logits.dtype == torch.bfloat16
    assert not torch.equal(ours_logits, logits(model, ids)), "the adapter changes nothing: a void test"
    torch.testing.assert_close(
        ours_logits.float(), their_logits.float(), atol=4e-3, rtol=0
    )  # 2 bf16 ulps at |logit| < 0.5 (measured: 1)
    assert all(p.dtype == torch.float32 for n, p in ours.named_parameters() if ".lora_" in n)
