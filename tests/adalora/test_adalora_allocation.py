"""AdaLoRA's training hooks: the budget schedule, where the importance state lives, and the
errors of a loop that calls ``update_and_allocate`` at the wrong time."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from peft_adalora import AdaLoraConfig, ImportanceState, SVDLinear
from peft_adalora.allocation import budget_schedule
from peft_core import ConfigError, PeftError, PeftModel
from peft_core.contract import adapter_layers
from support.adalora import Trainer, base, options, pattern, twins


def test_the_budget_schedule_is_the_incumbents_at_every_step() -> None:
    settings = {"init_r": 12, "target_r": 4, "tinit": 100, "tfinal": 200, "deltaT": 10, "total_step": 1000}
    theirs, _ = twins(base("llama"), **options("llama", **settings))
    allocator = theirs.base_model.rankallocator
    modules = len(options("llama")["target_modules"]) * 2
    assert (allocator.init_bgt, allocator.target_bgt) == (12 * modules, 4 * modules)
    config = AdaLoraConfig(**settings)
    for step in range(1000):  # the incumbent's schedule is asked only before total_step - tfinal
        expected = allocator.budget_schedule(step)
        assert budget_schedule(config, step, 12 * modules, 4 * modules) == expected, step
    # The numbers docs/adalora.md gives (16 modules: 192 triplets down to 64).
    steps = (100, 101, 110, 200, 300, 450, 600, 700, 799)
    got = [budget_schedule(config, step, 192, 64) for step in steps]
    assert got[:7] == [(192, False), (191, False), (186, True), (144, True), (110, True), (80, True), (66, True)]
    assert got[7:] == [(64, True), (64, False)]  # 799 is no multiple of deltaT


def _layers(model: PeftModel) -> list[SVDLinear]:
    return [layer for _, layer in adapter_layers(model.get_base_model()) if isinstance(layer, SVDLinear)]


def test_the_importance_state_lives_on_the_layers_and_survives_the_tuner() -> None:
    model = base("gpt2")
    _, steady = twins(model, **options("gpt2"))
    _, disturbed = twins(model, **options("gpt2"))
    steady_run, disturbed_run = Trainer(steady), Trainer(disturbed)
    for _ in range(7):
        steady_run.train_step()
        disturbed_run.train_step()
    tuner = disturbed.base_model.tuner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disturbed.add_adapter("spare", AdaLoraConfig(**options("gpt2"), inference_mode=True))
    assert disturbed.base_model.tuner is not tuner  # the engine made a new tuner
    for _ in range(5):
        steady_run.train_step()
        disturbed_run.train_step()
    assert pattern(disturbed) == pattern(steady)
    for mine, reference in zip(_layers(disturbed), _layers(steady), strict=True):
        state, expected = mine.importance("default"), reference.importance("default")
        mine_tensors, expected_tensors = (
            state.averages() + state.uncertainties(),
            expected.averages() + expected.uncertainties(),
        )
        for tensor, other in zip(mine_tensors, expected_tensors, strict=True):
            torch.testing.assert_close(tensor, other, atol=0, rtol=0)
        assert "spare" not in mine.adalora_state  # an inference-mode adapter keeps no training state
    names = set(disturbed.state_dict())
    assert not any("adalora_state" in name for name in names), "training state leaked into the state dict"
    disturbed.delete_adapter("default")  # its state goes with it
    assert _layers(disturbed) and all(not layer.adalora_state for layer in _layers(disturbed))
    assert all(
        isinstance(state, ImportanceState) for layer in _layers(steady) for state in layer.adalora_state.values()
    )


def test_plain_and_incumbent_spellings_call_the_same_allocation() -> None:
    model = base("llama")
    _, first = twins(model, **options("llama"))
    _, second = twins(model, **options("llama"))
    runs = [Trainer(first), Trainer(second)]
    for step in range(8):
        for run, spelling in zip(runs, ("peft", "incumbent"), strict=True):
            torch.manual_seed(100 + step)
            run.model(input_ids=run.ids, labels=run.ids).loss.backward()
            run.optimizer.step()
            if spelling == "peft":
                run.model.update_and_allocate(step)
            else:
                run.model.base_model.update_and_allocate(step)
            run.optimizer.zero_grad()
    assert pattern(first) == pattern(second) is not None


def test_allocating_without_gradients_is_one_error_saying_when_to_call() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2"))
    with pytest.raises(
        PeftError, match=r"no gradients .* after optimizer\.step\(\) and before optimizer\.zero_grad\(\)"
    ):
        ours.update_and_allocate(0)


def test_a_target_rank_above_the_initial_rank_is_refused_when_allocating() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2", init_r=2, target_r=3))  # a valid config, as in the incumbent
    run = Trainer(ours)
    with pytest.raises(ConfigError, match=r"target_r=3 > init_r=2, but AdaLoRA can only prune ranks"):
        run.train_step()


def test_a_merged_adapter_is_not_allocated() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2"))
    run = Trainer(ours)
    run.model(input_ids=run.ids, labels=run.ids).loss.backward()
    ours.merge_adapter()
    with pytest.raises(PeftError, match="merged .* unmerge it before update_and_allocate"):
        ours.update_and_allocate(0)


def test_after_the_final_allocation_pruned_triplets_stay_at_zero() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2"))
    run = Trainer(ours)
    for _ in range(23):  # the final allocation is at step 22
        run.train_step()
    final = pattern(ours)
    assert final is not None
    assert all(not layer.importance("default").has_averages() for layer in _layers(ours))  # dropped at step 22
    with torch.no_grad():
        for layer in _layers(ours):
            layer.lora_E["default"].fill_(1.0)
    run.train_step()
    assert pattern(ours) == final
    for path, layer in adapter_layers(ours.get_base_model()):
        zero = (layer.lora_E["default"] == 0).view(-1).tolist()
        assert zero == [not kept for kept in final[f"{path}.lora_E"]]


def test_skipping_the_final_allocation_step_is_an_error_naming_it() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2"))
    run = Trainer(ours)
    run.model(input_ids=run.ids, labels=run.ids).loss.backward()
    with pytest.raises(PeftError, match=r"step total_step - tfinal = 22"):
        ours.update_and_allocate(25)


def test_inference_adapters_get_no_regulariser_and_no_allocation(tmp_path: Path) -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    ours.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path)
    loaded.train()
    ids = Trainer(ours).ids
    with torch.no_grad():
        torch.manual_seed(0)  # the same dropout masks
        task_loss = loaded.get_base_model()(input_ids=ids, labels=ids).loss
        torch.manual_seed(0)
        torch.testing.assert_close(loaded(input_ids=ids, labels=ids).loss, task_loss, atol=0, rtol=0)
    loaded.update_and_allocate(0)  # nothing trains: nothing to allocate, and no error
    assert all(not layer.adalora_state for layer in _layers(loaded))


def test_the_regulariser_is_a_training_term_only() -> None:
    _, ours = twins(base("gpt2"), **options("gpt2", orth_reg_weight=0.5))
    ids = Trainer(ours).ids
    ours.eval()
    with torch.no_grad():
        task_loss = ours.get_base_model()(input_ids=ids, labels=ids).loss
        torch.testing.assert_close(ours(input_ids=ids, labels=ids).loss, task_loss, atol=0, rtol=0)
        ours.train()
        torch.manual_seed(0)
        with_term = ours(input_ids=ids, labels=ids).loss
        torch.manual_seed(0)
        plain = ours.get_base_model()(input_ids=ids, labels=ids).loss
    factors = [t for layer in _layers(ours) for t in (layer.lora_A["default"], layer.lora_B["default"].T)]
    expected = sum(torch.linalg.matrix_norm(f @ f.T - torch.eye(f.shape[0])) for f in factors) / len(factors)
    torch.testing.assert_close(with_term - plain, 0.5 * expected, atol=1e-5, rtol=0)


def test_only_the_active_trained_adapter_is_allocated() -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.add_adapter("other", AdaLoraConfig(**options("gpt2")))
    other = {n: p.detach().clone() for n, p in ours.named_parameters() if ".other" in n}
    run = Trainer(ours)
    for _ in range(10):
        run.train_step()
    assert pattern(ours) is not None and ours.peft_config["other"].rank_pattern is None
    assert all(torch.equal(p, other[n]) for n, p in ours.named_parameters() if n in other)
    assert all("other" not in layer.adalora_state for layer in _layers(ours))


def test_a_pruned_adapter_loaded_for_training_keeps_its_ranks(tmp_path: Path) -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2"))
    trained = Trainer(ours)
    for _ in range(23):
        trained.train_step()
    ours.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path, is_trainable=True)
    run = Trainer(loaded)
    with pytest.warns(UserWarning, match="loaded with pruned ranks .* leaves it as it is"):
        run.train_step()
    assert pattern(loaded) == pattern(ours)
