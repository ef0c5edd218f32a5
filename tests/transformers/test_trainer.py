"""transformers' Trainer on a peft-core PeftModel: only adapters train, checkpoints are adapters.

``PeftTrainer`` writes every checkpoint in the Hugging Face PEFT adapter layout and
resumes into the live adapters; the plain ``Trainer`` trains (with
``remove_unused_columns=False``) but saves full models, see peft_core/trainer.py.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer, TrainingArguments

from peft_core import PeftModel, get_peft_model
from peft_core.integrations.trainer import PeftTrainer
from peft_lora import LoraConfig
from support.hf_peft import ATOL, add_noise, base_model, hf_load, outputs
from support.models import token_ids


def _dataset(name: str, rows: int = 8) -> list[dict[str, Any]]:
    ids = token_ids(batch=rows, length=8, seed=5)
    labels = ids if name != "bert" else torch.arange(rows) % 2
    # "source" is no argument of the model: the trainer must drop it before the forward.
    return [{"input_ids": ids[i], "labels": labels[i], "source": torch.tensor(i)} for i in range(rows)]


def _args(output_dir: Path, **kwargs: Any) -> TrainingArguments:
    defaults: dict[str, Any] = {
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "learning_rate": 2e-2,
        "save_steps": 2,
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        "logging_steps": 1,
    }
    return TrainingArguments(output_dir=str(output_dir), **(defaults | kwargs))


def _peft(name: str, **kwargs: Any) -> PeftModel:
    targets = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "bert": ["query", "value"]}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # the same adapter init for every run
        return get_peft_model(base_model(name), LoraConfig(**({"r": 4, "target_modules": targets} | kwargs)))


def _train(trainer: Trainer, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(**kwargs)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_trains_only_adapters_and_every_checkpoint_is_an_adapter(tmp_path: Path) -> None:
    model = _peft("llama")
    before = _snapshot(model)
    args = _args(tmp_path, activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})
    trainer = PeftTrainer(model=model, args=args, train_dataset=_dataset("llama"))
    _train(trainer)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and all(".lora_" in n for n in moved)
    for step in (2, 4):
        files = {p.name for p in (tmp_path / f"checkpoint-{step}").iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= files
        assert "model.safetensors" not in files
    final = tmp_path / "checkpoint-4"
    model.eval()
    base = base_model("llama")
    x = token_ids()
    torch.testing.assert_close(outputs(PeftModel.from_pretrained(copy.deepcopy(base), final), x), outputs(model, x))
    torch.testing.assert_close(outputs(hf_load(base, final), x), outputs(model, x), atol=ATOL, rtol=0)
    trainer.save_model(tmp_path / "final")
    saved = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert set(saved) == {k.replace(".default", "") for k in moved}


def test_resume_from_checkpoint_continues_as_if_never_stopped(tmp_path: Path) -> None:
    # GPT-2 ties lm_head to wte: the plain Trainer cannot even save its checkpoints.
    straight = _peft("gpt2")
    _train(PeftTrainer(model=straight, args=_args(tmp_path / "a"), train_dataset=_dataset("gpt2")))
    halfway = tmp_path / "a" / "checkpoint-2"
    resumed = _peft("gpt2")
    params = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    trainer = PeftTrainer(model=resumed, args=_args(tmp_path / "b"), train_dataset=_dataset("gpt2"))
    _train(trainer, resume_from_checkpoint=str(halfway))
    assert trainer.state.global_step == 4
    for name, param in resumed.named_parameters():
        assert param is params.get(name, param)  # loaded in place: the same tensors
        torch.testing.assert_close(param, dict(straight.named_parameters())[name], atol=1e-6, rtol=0)


def test_resume_checks_the_checkpoint_fits(tmp_path: Path) -> None:
    _train(PeftTrainer(model=_peft("gpt2"), args=_args(tmp_path / "a", max_steps=2), train_dataset=_dataset("gpt2")))
    other = _peft("gpt2", r=2)
    trainer = PeftTrainer(model=other, args=_args(tmp_path / "b"), train_dataset=_dataset("gpt2"))
    with pytest.raises(Exception, match="checkpoint does not fit adapter 'default'"):
        _train(trainer, resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))


def test_sequence_classification_trains_the_head_evaluates_and_loads_the_best_model(tmp_path: Path) -> None:
    model = _peft("bert", task_type="SEQ_CLS")  # the head joins modules_to_save, as with Hugging Face PEFT
    assert model.peft_config["default"].modules_to_save == ["classifier"]
    args = _args(
        tmp_path,
        max_steps=3,
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=False,
    )
    data = _dataset("bert")
    trainer = PeftTrainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    assert trainer.label_names == ["labels"]
    _train(trainer)
    best = trainer.state.best_model_checkpoint
    assert best is not None
    saved = load_file(Path(best) / "adapter_model.safetensors")
    assert "base_model.model.classifier.weight" in saved
    add_noise(model)  # then load the best checkpoint again, as at the end of training
    trainer._load_best_model()
    live = {k.replace(".default", "").replace(".modules_to_save", ""): p for k, p in model.named_parameters()}
    for key, tensor in saved.items():
        assert torch.equal(live[key], tensor), key
    metrics = trainer.evaluate()
    with torch.no_grad():
        model.eval()
        batch = {k: torch.stack([row[k] for row in data]) for k in ("input_ids", "labels")}
        assert metrics["eval_loss"] == pytest.approx(model(**batch).loss.item(), abs=1e-5)


def test_plain_trainer_trains_only_the_adapters(tmp_path: Path) -> None:
    model = _peft("llama")
    before = _snapshot(model)
    args = _args(tmp_path, remove_unused_columns=False, save_strategy="no")
    data = [{k: v for k, v in row.items() if k != "source"} for row in _dataset("llama")]
    _train(Trainer(model=model, args=args, train_dataset=data))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad} and moved
