"""Hugging Face PEFT's documented examples on saved adapters, run with only their imports changed.

As test_incumbent_snippets.py: each snippet runs as written with ``peft`` and with its
imports pointed at ``peft_core`` (support/snippets.py), from the same seed. The adapters the
docs download from the hub are made here once, by the incumbent, as folders: both runs load
the same files, so their outputs must agree (fp32, atol 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch

from support.models import tiny_llama
from support.snippets import both

ATOL = 1e-5


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Folders of four LoRA adapters for tiny_llama, saved by Hugging Face PEFT (non-zero B)."""
    root = tmp_path_factory.mktemp("hub")
    folders = {}
    for seed, name in enumerate(("sft", "dpo", "fr", "de")):
        torch.manual_seed(100 + seed)
        config = peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8, init_lora_weights=False)
        model = peft.get_peft_model(tiny_llama(), config)
        folders[name] = str(root / name)
        model.save_pretrained(folders[name])
    return folders


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


# --- package_reference/lora.md: "Inference with different LoRA adapters in the same batch" ---


def test_mixed_adapter_batch_generate(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel

        model = tiny_llama()  # docs: AutoModelForCausalLM.from_pretrained(model_id)
        # load the LoRA adapter for French
        peft_model = PeftModel.from_pretrained(model, fr_path, adapter_name="adapter_fr")
        # next, load the LoRA adapter for German
        peft_model.load_adapter(de_path, adapter_name="adapter_de")
        inputs = {"input_ids": token_ids(batch=9, length=6), "attention_mask": torch.ones(9, 6, dtype=torch.long)}
        adapter_names = [
            "__base__", "__base__", "__base__",
            "adapter_fr", "adapter_fr", "adapter_fr",
            "adapter_de", "adapter_de", "adapter_de",
        ]
        output = peft_model.generate(**inputs, adapter_names=adapter_names, max_new_tokens=20, do_sample=False)
        logits = peft_model(**inputs, adapter_names=adapter_names).logits
        """,
        fr_path=adapters["fr"],
        de_path=adapters["de"],
    )
    assert torch.equal(ours["output"], theirs["output"])
    _close(ours["logits"], theirs["logits"])


# --- package_reference/lora.md: "Merge LoRA weights into the base model" ---


def test_merge_and_unload(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        base_model = tiny_llama()  # docs: AutoModelForCausalLM.from_pretrained("mistralai/Mistral-7B-v0.1")
        peft_model_id = sft_path  # docs: "alignment-handbook/zephyr-7b-sft-lora"
        model = PeftModel.from_pretrained(base_model, peft_model_id)
        before = model(token_ids()).logits
        model = model.merge_and_unload()
        after = model(token_ids()).logits
        kind = type(model).__name__
        """,
        sft_path=adapters["sft"],
    )
    _close(ours["after"], theirs["after"])
    _close(ours["after"], ours["before"])
    assert ours["kind"] == theirs["kind"] == "LlamaForCausalLM"


def test_merge_adapter_then_unmerge_adapter(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        base_model = tiny_llama()
        model = PeftModel.from_pretrained(base_model, sft_path)
        unmerged = model(token_ids()).logits
        model.merge_adapter()
        merged = model(token_ids()).logits
        # unmerge the LoRA layers from the base model
        model.unmerge_adapter()
        again = model(token_ids()).logits
        """,
        sft_path=adapters["sft"],
    )
    for name in ("unmerged", "merged", "again"):
        _close(ours[name], theirs[name])


def test_weighted_adapter_linear_then_set_adapter(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        base_model = tiny_llama()  # docs: Mistral-7B-v0.1 in float16
        model = PeftModel.from_pretrained(base_model, sft_path, adapter_name="sft")
        weighted_adapter_name = "sft-dpo"
        model.load_adapter(dpo_path, adapter_name="dpo")
        model.add_weighted_adapter(
            adapters=["sft", "dpo"],
            weights=[0.7, 0.3],
            adapter_name=weighted_adapter_name,
            combination_type="linear"
        )
        model.set_adapter(weighted_adapter_name)
        with torch.no_grad():
            generate_ids = model.generate(input_ids=token_ids(batch=1), max_length=30, do_sample=False)
            logits = model(token_ids()).logits
        """,
        sft_path=adapters["sft"],
        dpo_path=adapters["dpo"],
    )
    _close(ours["logits"], theirs["logits"])
    assert torch.equal(ours["generate_ids"], theirs["generate_ids"])


# --- developer_guides/model_merging.md ---


def test_model_merging_default_combination(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        model = PeftModel.from_pretrained(tiny_llama(), a1, adapter_name="adapter1")
        _ = model.load_adapter(a2, adapter_name="adapter2")
        _ = model.load_adapter(a3, adapter_name="adapter3")
        adapters = ["adapter1", "adapter2", "adapter3"]
        weights = [0.4, 0.3, 0.3]
        adapter_name = "merge"
        model.add_weighted_adapter(adapters, weights, adapter_name)
        model.set_adapter("merge")
        logits = model(token_ids()).logits
        """,
        a1=adapters["sft"],
        a2=adapters["dpo"],
        a3=adapters["fr"],
    )
    # The default combination is "svd" in both: the rank-r truncation of the weighted sum of
    # the adapters' deltas, unique up to the sign of each factor pair.
    torch.testing.assert_close(ours["logits"], theirs["logits"], atol=1e-4, rtol=0)


# --- package_reference/lora.md: "Load adapters" ---


def test_load_set_unload_and_delete_adapters(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        base_model = tiny_llama()
        peft_model_id = sft_path
        model = PeftModel.from_pretrained(base_model, peft_model_id)

        # load different adapter
        model.load_adapter(dpo_path, adapter_name="dpo")

        # set adapter as active
        model.set_adapter("dpo")
        dpo_logits = model(token_ids()).logits

        # delete adapter (the docs unload first; an unloaded model has no adapters to delete)
        model.set_adapter("default")
        model.delete_adapter("dpo")
        remaining = list(model.peft_config)

        # unload adapter
        model = model.unload()
        base_logits = model(token_ids()).logits
        """,
        sft_path=adapters["sft"],
        dpo_path=adapters["dpo"],
    )
    _close(ours["dpo_logits"], theirs["dpo_logits"])
    _close(ours["base_logits"], theirs["base_logits"])
    _close(ours["base_logits"], tiny_llama()(ours["token_ids"]()).logits)
    assert ours["remaining"] == theirs["remaining"] == ["default"]


# --- package_reference/hotswap.md ---


def test_hotswap_adapter(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        import torch
        from peft import PeftModel
        from peft.utils.hotswap import hotswap_adapter

        inputs = token_ids()
        device = "cpu"
        model = tiny_llama().to(device)  # docs: AutoModelForCausalLM.from_pretrained(model_id).to(device)

        # load lora 0
        model = PeftModel.from_pretrained(model, path_0)
        with torch.inference_mode():
            output_adapter_0 = model(inputs).logits

        # replace the "default" lora adapter with the new one
        hotswap_adapter(model, path_1, adapter_name="default", torch_device=device)
        with torch.inference_mode():
            output_adapter_1 = model(inputs).logits
        """,
        path_0=adapters["sft"],
        path_1=adapters["dpo"],
    )
    _close(ours["output_adapter_0"], theirs["output_adapter_0"])
    _close(ours["output_adapter_1"], theirs["output_adapter_1"])


def test_hotswap_prepared_for_a_higher_rank(adapters: dict[str, str], tmp_path: Path) -> None:
    torch.manual_seed(7)
    config = peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=8, lora_alpha=4, init_lora_weights=False)
    peft.get_peft_model(tiny_llama(), config).save_pretrained(tmp_path / "rank8")
    theirs, ours = both(
        """
        import torch
        from peft import PeftModel
        from peft.utils.hotswap import hotswap_adapter, prepare_model_for_compiled_hotswap

        inputs = token_ids()
        max_rank = 8  # maximum rank among all LoRA adapters that will be used
        model = tiny_llama()

        # load lora 0
        model = PeftModel.from_pretrained(model, path_0)
        # Prepare the model to allow hotswapping even if ranks/scalings of 2nd adapter differ.
        prepare_model_for_compiled_hotswap(model, target_rank=max_rank)
        with torch.inference_mode():
            output_adapter_0 = model(inputs).logits

        # replace the "default" lora adapter with the new one
        hotswap_adapter(model, path_1, adapter_name="default", torch_device="cpu")
        with torch.inference_mode():
            output_adapter_1 = model(inputs).logits
        """,
        path_0=adapters["sft"],
        path_1=str(tmp_path / "rank8"),
    )
    _close(ours["output_adapter_0"], theirs["output_adapter_0"])
    _close(ours["output_adapter_1"], theirs["output_adapter_1"])


# --- package_reference/peft_model.md / quicktour.md: disabling adapters ---


def test_disable_adapter_gives_the_base_outputs(adapters: dict[str, str]) -> None:
    theirs, ours = both(
        """
        from peft import PeftModel
        model = PeftModel.from_pretrained(tiny_llama(), sft_path)
        with model.disable_adapter():
            base = model(token_ids()).logits
        adapted = model(token_ids()).logits
        """,
        sft_path=adapters["sft"],
    )
    _close(ours["base"], theirs["base"])
    _close(ours["adapted"], theirs["adapted"])
