"""transformers' Trainer (``PeftTrainer``) with prompt learning: only the virtual tokens train, and
every checkpoint is a prompt adapter both libraries load with the trained outputs."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from transformers import TrainingArguments

from peft_core import PeftModel, get_peft_model
from peft_core.integrations.trainer import PeftTrainer
from peft_prefix_tuning import PrefixTuningConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import tiny_llama, token_ids

CONFIGS = {
    "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_peft_trainer_trains_the_virtual_tokens_and_saves_prompt_adapters(method: str, tmp_path: Path) -> None:
    base = tiny_llama()
    model = get_peft_model(copy.deepcopy(base), CONFIGS[method].model_copy())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = token_ids(batch=8, length=8, seed=5)
    dataset = [{"input_ids": ids[i], "labels": ids[i]} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=5e-2,
        save_steps=4,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = PeftTrainer(model=model, args=args, train_dataset=dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"base_model.adapter_modules.default.embedding.weight"}
    model.eval()
    checkpoint = tmp_path / "checkpoint-4"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(input_ids=ids).logits
        ours = PeftModel.from_pretrained(copy.deepcopy(base), checkpoint)(input_ids=ids).logits
        theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), checkpoint)(input_ids=ids).logits
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)
