"""Task-type models and auto classes: chosen by ``task_type`` as in Hugging Face PEFT.

``get_peft_model`` and ``PeftModel.from_pretrained`` return the class of the config's task
(a ``TaskType`` or its string); a task-type class gives its task to a config without one
and refuses another; the ``AutoPeftModel*`` classes load the base model named by an
adapter folder (a local folder here) and then the adapter.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

import peft_core
from peft_core import (
    AutoPeftModel,
    AutoPeftModelForCausalLM,
    AutoPeftModelForSequenceClassification,
    ConfigError,
    PeftError,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForSequenceClassification,
    TaskType,
    get_peft_model,
)
from peft_lora import LoraConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import tiny_bert, tiny_gpt2, token_ids

IDS = token_ids(batch=2, length=5)


def _class(model: nn.Module) -> type:
    """The class a model was made as (an instance gets a subclass carrying its wrapped model's signature)."""
    cls: type = getattr(type(model), "_unsigned_class", type(model))
    return cls


@pytest.mark.parametrize("task", list(TaskType))
def test_get_peft_model_returns_the_class_hugging_face_peft_returns_for_each_task(task: TaskType) -> None:
    ours = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], task_type=task))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], task_type=task.value))
    assert type(ours).__name__ == type(theirs).__name__ == peft_core.MODEL_TYPE_TO_PEFT_MODEL_MAPPING[task].__name__
    assert isinstance(ours, PeftModel) and _class(ours).task_type == task.value
    plain = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"]))
    assert _class(plain) is PeftModel


def test_from_pretrained_picks_the_class_of_the_saved_task_whatever_it_is_called_on(tmp_path: Path) -> None:
    model = get_peft_model(tiny_bert(), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    model.save_pretrained(tmp_path)
    assert _class(PeftModel.from_pretrained(tiny_bert(), tmp_path)) is PeftModelForSequenceClassification
    assert _class(PeftModelForCausalLM.from_pretrained(tiny_bert(), tmp_path)) is PeftModelForSequenceClassification


def test_a_task_class_gives_its_task_to_a_config_without_one_and_refuses_another(tmp_path: Path) -> None:
    config = PromptTuningConfig(num_virtual_tokens=2)
    model = PeftModelForCausalLM(tiny_gpt2(), config)
    assert config.task_type is None and model.peft_config["default"].task_type == "CAUSAL_LM"
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    with pytest.raises(ConfigError, match="PeftModelForCausalLM runs task_type 'CAUSAL_LM', but .* 'SEQ_CLS'"):
        model.add_adapter("other", PromptTuningConfig(num_virtual_tokens=2, task_type="SEQ_CLS"))
    assert list(model.peft_config) == ["default"]
    untyped = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"]))
    untyped.save_pretrained(tmp_path / "untyped")
    loaded = PeftModelForCausalLM.from_pretrained(tiny_gpt2(), tmp_path / "untyped")
    assert _class(loaded) is PeftModelForCausalLM and loaded.peft_config["default"].task_type == "CAUSAL_LM"


def _saved_base(folder: Path, model: nn.Module) -> nn.Module:
    """``model`` saved to ``folder`` and read back with transformers (so it names that folder)."""
    model.save_pretrained(folder)
    loaded: nn.Module = type(model).from_pretrained(folder).eval()
    return loaded


def test_auto_classes_load_the_base_model_named_by_the_adapter_from_a_local_folder(tmp_path: Path) -> None:
    base = _saved_base(tmp_path / "base", tiny_gpt2())
    model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert model.peft_config["default"].base_model_name_or_path == str(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    assert _class(loaded) is PeftModelForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=0, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")  # the same folder there
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-5, rtol=0)
    with pytest.raises(PeftError, match="task_type is 'CAUSAL_LM', which PeftModelForCausalLM runs"):
        AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter")
    with pytest.raises(PeftError, match="use the auto class of that task"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
    with pytest.raises(PeftError, match="call AutoPeftModelForCausalLM.from_pretrained"):
        AutoPeftModelForCausalLM(tmp_path / "adapter")


def test_auto_classes_grow_the_embeddings_to_a_larger_tokenizer_saved_with_the_adapter(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    base = _saved_base(tmp_path / "base", tiny_gpt2())
    get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM")).save_pretrained(
        tmp_path / "adapter"
    )
    vocab = {f"w{i}": i for i in range(70)}  # the model has 64 token embeddings
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")))
    tokenizer.save_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    assert loaded.get_base_model().get_input_embeddings().weight.shape[0] == 70


def test_auto_peft_model_reads_the_base_class_from_auto_mapping_within_the_allow_list(tmp_path: Path) -> None:
    base = _saved_base(tmp_path / "base", tiny_gpt2())
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    with pytest.raises(PeftError, match="no task_type and no auto_mapping"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
    config = json.loads(config_path.read_text())
    config["auto_mapping"] = {"base_model_class": "GPT2LMHeadModel", "parent_library": "transformers"}
    config_path.write_text(json.dumps(config))
    loaded = AutoPeftModel.from_pretrained(tmp_path / "adapter")
    assert _class(loaded) is PeftModel
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-6, rtol=0)
    config["auto_mapping"]["parent_library"] = "os"
    config_path.write_text(json.dumps(config))
    with pytest.raises(PeftError, match="'os', which is not in the import allow-list"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
