"""transformers' plain ``Trainer`` with the incumbent's quicktour arguments works on a peft-core model.

``Trainer`` chooses dataset columns, label names and loss handling from the model's
``forward`` signature; ``PeftModel.forward`` shows the wrapped model's (plus
``adapter_names``), as Hugging Face PEFT's model is looked through by ``Trainer``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.utils import find_labels

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig
from support.models import tiny_bert, token_ids


def _data(n: int, seed: int) -> list[dict[str, Any]]:
    ids = token_ids(batch=n, length=8, seed=seed)
    return [
        {"input_ids": row, "attention_mask": torch.ones_like(row), "label": int(row[0] % 2), "text": "unused column"}
        for row in ids
    ]


def test_the_wrapper_shows_the_wrapped_models_forward_signature() -> None:
    model = get_peft_model(tiny_bert(), LoraConfig(target_modules=["query", "value"], task_type="SEQ_CLS"))
    parameters = inspect.signature(model.forward).parameters
    assert list(parameters)[:3] == ["input_ids", "attention_mask", "token_type_ids"]
    assert "labels" in parameters and "adapter_names" in parameters
    assert find_labels(type(model)) == ["labels"]
    assert isinstance(model, PeftModel) and type(model).__name__ == "PeftModelForSequenceClassification"  # as HF


def test_the_quicktour_trains_evaluates_and_reloads_the_best_model(tmp_path: Path) -> None:
    model = get_peft_model(tiny_bert(), LoraConfig(target_modules=["query", "value"], task_type="SEQ_CLS"))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        num_train_epochs=2,
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_data(16, 0), eval_dataset=_data(8, 1))
    before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    result = trainer.train()
    metrics = trainer.evaluate()
    assert result.global_step == 8 and "eval_loss" in metrics and metrics["eval_loss"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.requires_grad == (n in before) for n, p in model.named_parameters())  # base still frozen
