"""FSDP2 (fully_shard) across 2 gloo ranks: sharded frozen base, trained adapters, gathered saves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import training_cases as cases
from safetensors.torch import load_file

from peft_core import PeftModel, get_peft_model_state_dict

pytestmark = pytest.mark.distributed
FP32_CASES = [name for name in cases.FSDP_CASES if "bf16" not in name]


def _facts(worker_results: Path, name: str, rank: int = 0) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((worker_results / "fsdp" / name / f"rank{rank}.json").read_text())
    return facts


@pytest.mark.parametrize("name", FP32_CASES)
def test_adapters_train_like_one_process_and_gather_whole(worker_results: Path, name: str) -> None:
    folder = worker_results / "fsdp" / name
    rank0, rank1 = (load_file(folder / f"rank{r}.safetensors") for r in range(cases.WORLD_SIZE))
    reference = cases.reference_state(name)
    initial = cases.initial_state(name)
    assert set(rank0) == set(rank1) == set(reference)
    for key in reference:
        assert rank0[key].shape == reference[key].shape, key  # gathered whole, never a shard
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], reference[key], atol=cases.tolerance(name), rtol=0, msg=key)
        assert (rank0[key] - initial[key]).abs().max() > 1e-3, key


@pytest.mark.parametrize("name", cases.FSDP_CASES)
def test_base_weights_are_sharded_frozen_and_kept_apart(worker_results: Path, name: str) -> None:
    facts = [_facts(worker_results, name, r) for r in range(cases.WORLD_SIZE)]
    trainable = set(cases.reference_state(name))  # checkpoint keys of what trains
    plan = facts[0]["plan"]
    owned = [p for group in plan for p in group["parameters"]]
    assert sorted(owned) == sorted(facts[0]["global_shapes"])  # every parameter in exactly one group
    assert all(group["trainable"] is not None for group in plan)  # no group mixes frozen and trainable
    assert plan[-1]["modules"] == [""]  # the root last
    assert facts[0]["frozen_max_change"] == 0.0
    for param, shape in facts[0]["global_shapes"].items():
        local = [f["local_shapes"][param] for f in facts]
        assert sum(rows[0] for rows in local) == shape[0], param  # dim-0 shards that add up to the whole
        if shape[0] >= cases.WORLD_SIZE:
            assert all(rows[0] < shape[0] for rows in local), param  # no rank holds all of it
    frozen_groups = [g for g in plan if g["trainable"] is False]
    assert any("base_layer" in m for g in frozen_groups for m in g["modules"])
    assert len(trainable) == sum(len(g["parameters"]) for g in plan if g["trainable"])


def test_bf16_base_with_fp32_adapters_and_a_bf16_copy_trains_in_separate_groups(worker_results: Path) -> None:
    name = "lora_llama_bf16"
    folder = worker_results / "fsdp" / name
    rank0, rank1 = (load_file(folder / f"rank{r}.safetensors") for r in range(cases.WORLD_SIZE))
    reference, initial = cases.reference_state(name), cases.initial_state(name)
    assert rank0["base_model.model.lm_head.weight"].dtype == torch.bfloat16
    assert {v.dtype for k, v in rank0.items() if "lora_" in k} == {torch.float32}
    for key in reference:
        assert torch.equal(rank0[key], rank1[key]), key
        # bf16 activations round differently in another summation order, and AdamW turns that into
        # whole steps for near-zero gradients; the update itself agrees (measured: within 12.5%).
        update, reference_update = (
            rank0[key].float() - initial[key].float(),
            reference[key].float() - initial[key].float(),
        )
        assert (update - reference_update).norm() < 0.25 * reference_update.norm(), key
    plan = _facts(worker_results, name)["plan"]
    assert [g["trainable"] for g in plan[-3:]] == [False, True, True]  # root: frozen, bf16 copy, fp32 adapters


def test_a_rank_may_hold_an_empty_shard_yet_the_saved_tensor_is_whole(worker_results: Path) -> None:
    # IA3's input-scaling vector has shape (1, in): dim 0 splits as 1 + 0 rows.
    key = "base_model.model.lin1.ia3_l.default"
    shards = [_facts(worker_results, "ia3_mlp", r)["local_shapes"][key] for r in range(cases.WORLD_SIZE)]
    assert shards == [[1, 16], [0, 16]]
    saved = load_file(worker_results / "fsdp" / "ia3_mlp" / "saved-by-rank0" / "adapter_model.safetensors")
    assert saved["base_model.model.lin1.ia3_l"].shape == (1, 16)
    assert all(tensor.numel() > 0 for tensor in saved.values())


@pytest.mark.parametrize("name", cases.FSDP_CASES)
def test_saving_sharded_adapters(worker_results: Path, name: str) -> None:
    folder = worker_results / "fsdp" / name
    facts = _facts(worker_results, name)
    # The plain save sees DTensors: one clear error, no file.
    assert "refusing to save sharded DTensors" in facts["plain_save_error"]
    assert "peft_core.integrations.distributed.save_pretrained" in facts["plain_save_error"]
    assert not (folder / "plain-save-rank0").exists() or not any((folder / "plain-save-rank0").iterdir())
    # The helper and the torch.distributed.checkpoint route write the same file, on rank 0 only.
    for prefix in ("saved-by-rank", "dcp-saved-by-rank"):
        assert not (folder / f"{prefix}1").exists()
    gathered = load_file(folder / "rank0.safetensors")
    # save_embedding_layers="auto": with embed_tokens a target, the base embedding is saved too, whole.
    embeddings = {"base_model.model.model.embed_tokens.base_layer.weight"} if name == "lora_llama_bf16" else set()
    for prefix in ("saved-by-rank0", "dcp-saved-by-rank0"):
        saved = load_file(folder / prefix / "adapter_model.safetensors")
        assert saved.keys() == gathered.keys() | embeddings
        assert all(torch.equal(saved[k], gathered[k]) for k in gathered)
        for key in embeddings:
            assert torch.equal(saved[key], cases.fresh_base(name).get_input_embeddings().weight)
    loaded = PeftModel.from_pretrained(cases.fresh_base(name), folder / "saved-by-rank0")
    assert all(torch.equal(v, gathered[k]) for k, v in get_peft_model_state_dict(loaded).items())
    if name not in FP32_CASES:
        return
    batch = cases.global_batch(name, 0)
    expected = cases.logits(cases.reference(name), batch)
    torch.testing.assert_close(cases.logits(loaded, batch), expected, atol=1e-5, rtol=0)  # measured <= 9.1e-7
