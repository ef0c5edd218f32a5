"""Hugging Face PEFT's documented examples (IA3, troubleshooting, the config guide), run with only
their imports changed; see test_incumbent_snippets.py for how each runs and what must match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support.snippets import both, run

ATOL = 1e-5


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=ATOL, rtol=0, msg=key)


# --- quicktour.md ---


def test_ia3_usage() -> None:
    theirs, ours = both(
        """
        from peft import IA3Config, TaskType, get_peft_model
        model = tiny_llama()  # docs: AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM-135M")
        peft_config = IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=["k_proj", "v_proj", "down_proj"],
            feedforward_modules=["down_proj"],
        )
        model = get_peft_model(model, peft_config)
        model.print_trainable_parameters()
        logits = model(token_ids()).logits
        """
    )
    assert ours["_stdout"] == theirs["_stdout"]
    torch.testing.assert_close(ours["logits"], theirs["logits"], atol=ATOL, rtol=0)


# --- developer_guides/troubleshooting.md ---


def test_troubleshooting_load_with_peft_config_from_pretrained(tmp_path: Path) -> None:
    theirs, ours = both(
        """
        from peft import LoraConfig, get_peft_model
        trained = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
        trained.save_pretrained(peft_model_id)

        from peft import PeftModel, PeftConfig

        base_model = tiny_llama()  # to load the base model, use the same code as when you trained it
        config = PeftConfig.from_pretrained(peft_model_id)
        peft_model = PeftModel.from_pretrained(base_model, peft_model_id)
        logits = peft_model(token_ids()).logits
        """,
        peft_model_id=str(tmp_path / "adapter"),
    )
    assert type(ours["config"]).__name__ == type(theirs["config"]).__name__ == "LoraConfig"
    # Hugging Face PEFT turns a target list into a set; peft-core keeps the list as given.
    assert set(ours["config"].target_modules) == theirs["config"].target_modules == {"q_proj"}
    torch.testing.assert_close(ours["logits"], theirs["logits"], atol=ATOL, rtol=0)


def test_troubleshooting_weights_are_updated() -> None:
    theirs, ours = both(
        """
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "v_proj"]))
        # before training
        sample_param = next(p for p in model.parameters() if p.requires_grad)
        before = sample_param.detach().clone()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(3):  # ... train for at least three optimizer steps ...
            model(token_ids(), labels=token_ids()).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        after = next(p for p in model.parameters() if p.requires_grad)
        print("weights updated:", not torch.allclose(before, after.detach().cpu()))
        """
    )
    assert ours["_stdout"] == theirs["_stdout"] == "weights updated: True\n"


def test_troubleshooting_classification_head_in_modules_to_save() -> None:
    theirs, ours = both(
        """
        from peft import LoraConfig, TaskType, get_peft_model
        lora_config = LoraConfig(target_modules=["query", "value"], task_type=TaskType.SEQ_CLS)
        model = get_peft_model(tiny_bert(), lora_config)
        model.print_trainable_parameters()
        lora_config = LoraConfig(target_modules=["query", "value"], modules_to_save=["classifier"])
        other = get_peft_model(tiny_bert(), lora_config)
        other.print_trainable_parameters()
        """
    )
    assert ours["_stdout"] == theirs["_stdout"]
    assert ours["_stdout"].splitlines()[0] == ours["_stdout"].splitlines()[1]


def test_troubleshooting_save_embedding_layers(tmp_path: Path) -> None:
    theirs, ours = both(
        """
        from peft import LoraConfig, get_peft_model
        from safetensors.torch import load_file
        config = LoraConfig(target_modules=["embed_tokens", "lm_head", "q_proj", "v_proj"])
        model = get_peft_model(tiny_llama(), config)
        # train the model
        model.save_pretrained(folder, save_embedding_layers=True)
        keys = sorted(load_file(folder + "/adapter_model.safetensors"))
        """,
        folder=str(tmp_path / "emb"),
    )
    assert ours["keys"] == theirs["keys"]
    assert "base_model.model.model.embed_tokens.base_layer.weight" in ours["keys"]


def test_troubleshooting_layer_and_model_status() -> None:
    theirs, ours = both(
        """
        from peft import get_peft_model, LoraConfig
        model = tiny_t5()  # docs: AutoModel.from_pretrained("google/flan-t5-small")
        model = get_peft_model(model, LoraConfig())
        layers = model.get_layer_status()
        status = model.get_model_status()
        from dataclasses import asdict
        rows = [asdict(layer) for layer in model.get_layer_status()]
        """
    )
    assert [r["name"] for r in ours["rows"]] == [r["name"] for r in theirs["rows"]]
    fields = ("enabled", "active_adapters", "merged_adapters", "requires_grad", "available_adapters")
    assert [{f: r[f] for f in fields} for r in ours["rows"]] == [{f: r[f] for f in fields} for r in theirs["rows"]]
    for field in ("base_model_type", "trainable_params", "total_params", "num_adapter_layers", "active_adapters"):
        assert getattr(ours["status"], field) == getattr(theirs["status"], field), field


# --- guides/peft_model_config.md ---


def test_config_guide_lora_config_counts_and_from_pretrained(tmp_path: Path) -> None:
    theirs, ours = both(
        """
        from peft import LoraConfig, TaskType
        lora_config = LoraConfig(
            r=16,
            target_modules=["q_proj", "v_proj"],
            task_type=TaskType.CAUSAL_LM,
            lora_alpha=32,
            lora_dropout=0.05
        )
        model = tiny_llama()  # docs: AutoModelForCausalLM.from_pretrained("facebook/opt-350m")
        from peft import get_peft_model
        lora_model = get_peft_model(model, lora_config)
        lora_model.print_trainable_parameters()
        lora_model.save_pretrained(folder)  # docs: "your-name/opt-350m-lora"

        from peft import PeftModel, PeftConfig
        config = PeftConfig.from_pretrained(folder)
        model = tiny_llama()  # docs: AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path)
        lora_model = PeftModel.from_pretrained(model, folder, is_trainable=True)
        lora_model.print_trainable_parameters()
        as_dict = config.to_dict()
        """,
        folder=str(tmp_path / "lora"),
    )
    assert ours["_stdout"] == theirs["_stdout"]
    for key in ("r", "lora_alpha", "lora_dropout", "peft_type", "task_type", "target_modules"):
        mine, reference = ours["as_dict"][key], theirs["as_dict"][key]
        assert (sorted(mine) if key == "target_modules" else mine) == (
            sorted(reference) if key == "target_modules" else reference
        ), key


@pytest.mark.parametrize("library", ["peft", "peft_core"])
def test_unknown_config_keyword_is_a_type_error_in_both(library: str) -> None:
    with pytest.raises(TypeError):
        run("from peft import LoraConfig\nLoraConfig(rank=8)", library)
