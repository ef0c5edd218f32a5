"""PeftTrainer allocates AdaLoRA ranks for the user: ``update_and_allocate(step)`` after every
optimizer step, as the incumbent's users wire it into transformers' Trainer by hand."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainingArguments

from peft_core.integrations.trainer import PeftTrainer
from support.adalora import base, logits, options, pattern, twins
from support.hf_peft import hf_load
from support.models import token_ids

SETTINGS = {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 2, "total_step": 6, "deltaT": 1}


def _dataset(rows: int = 16) -> list[dict[str, Any]]:
    ids = token_ids(batch=rows, length=8, seed=5)
    return [{"input_ids": ids[i], "labels": ids[i]} for i in range(rows)]


def _args(output_dir: Path, **kwargs: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_steps": 6,
        "learning_rate": 2e-2,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    return TrainingArguments(output_dir=str(output_dir), **(settings | kwargs))


class IncumbentWiring(TrainerCallback):  # type: ignore[misc]
    """How the incumbent's users call AdaLoRA's allocation from transformers' Trainer."""

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        model.base_model.update_and_allocate(state.global_step)


def test_peft_trainer_allocates_after_each_optimizer_step_as_the_incumbent_wired_by_hand(tmp_path: Path) -> None:
    model = base("gpt2")
    theirs, ours = twins(model, **options("gpt2", **SETTINGS))
    steps: list[int] = []
    allocate = ours.update_and_allocate
    ours.update_and_allocate = lambda step: (steps.append(step), allocate(step))  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PeftTrainer(model=ours, args=_args(tmp_path / "ours"), train_dataset=_dataset()).train()
        Trainer(
            model=theirs, args=_args(tmp_path / "theirs"), train_dataset=_dataset(), callbacks=[IncumbentWiring()]
        ).train()
    assert steps == [0, 1, 2, 3, 4, 5]  # once per optimizer step (2 batches each), numbered from 0
    final = pattern(ours)
    assert final is not None and final == pattern(theirs)
    assert sum(sum(mask) for mask in final.values()) == 2 * len(final)  # final at step 4: target_r per module
    ids = token_ids(batch=2, length=8, seed=3)
    torch.testing.assert_close(logits(ours, ids), logits(theirs, ids), atol=1e-5, rtol=0)


def test_the_trainers_saved_adapter_is_pruned_and_loads_in_the_incumbent(tmp_path: Path) -> None:
    model = base("gpt2")
    _, ours = twins(model, **options("gpt2", **SETTINGS))
    trainer = PeftTrainer(model=ours, args=_args(tmp_path), train_dataset=_dataset())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    trainer.save_model(tmp_path / "final")
    saved = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
    tensors = load_file(tmp_path / "final" / "adapter_model.safetensors")
    for key, mask in saved["rank_pattern"].items():
        assert tensors[f"base_model.model.{key}"].shape == (sum(mask), 1)
    ids = token_ids(batch=2, length=8, seed=3)
    torch.testing.assert_close(logits(hf_load(model, tmp_path / "final"), ids), logits(ours, ids), atol=1e-5, rtol=0)
