"""The helpers of peft_core.distributed and peft_core.fsdp that need no process group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peft_core import AdapterSaveError, PeftError, get_peft_model, get_peft_model_state_dict, inject_adapter_in_model
from peft_core.integrations.distributed import (
    adapter_key_map,
    freeze_unused_adapters,
    gather_adapter_state_dict,
    is_sharded,
    save_pretrained,
    select_adapter_state_dict,
    unused_trainable_parameters,
    unwrap_model,
    wrap_ddp,
)
from peft_core.integrations.fsdp import default_block_types, shard_plan
from peft_lora import LoraConfig
from support.models import MLP, tiny_llama

OTHER = ["base_model.model.lin0.lora_A.other.weight", "base_model.model.lin0.lora_B.other.weight"]


def _mlp(**extra: object) -> nn.Module:
    config = LoraConfig(r=2, target_modules=["lin0", "lin1"], modules_to_save=["head"], init_lora_weights=False)
    return get_peft_model(MLP(), config.model_copy(update=extra))


def _two_adapters() -> nn.Module:
    model = _mlp()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["lin0"]))
    return model


# --- DDP: trainable parameters that no forward uses ---


def test_one_adapter_with_modules_to_save_leaves_nothing_unused() -> None:
    model = _mlp()
    assert unused_trainable_parameters(model) == []
    original = model.base_model.model.head.original_module
    assert not any(p.requires_grad for p in original.parameters())  # DDP ignores frozen originals
    assert all(p.requires_grad for p in model.base_model.model.head.modules_to_save["default"].parameters())


def test_inactive_disabled_and_merged_adapters_are_unused() -> None:
    model = _two_adapters()
    assert unused_trainable_parameters(model) == OTHER
    model.set_adapter("other")  # now default's tensors (and its copy of head) go unused
    assert unused_trainable_parameters(model) == [
        "base_model.model.lin0.lora_A.default.weight",
        "base_model.model.lin0.lora_B.default.weight",
        "base_model.model.lin1.lora_A.default.weight",
        "base_model.model.lin1.lora_B.default.weight",
        "base_model.model.head.modules_to_save.default.weight",
        "base_model.model.head.modules_to_save.default.bias",
    ]
    single = _mlp()
    with single.disable_adapter():
        assert len(unused_trainable_parameters(single)) == 6
    single.merge_adapter()
    merged = unused_trainable_parameters(single)
    assert len(merged) == 4 and all(".lora_" in n for n in merged)  # head's copy is still what forward runs


def test_freeze_unused_adapters_freezes_exactly_those() -> None:
    model = _two_adapters()
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
    assert freeze_unused_adapters(model) == OTHER
    trainable_after = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_before - trainable_after == set(OTHER)
    assert unused_trainable_parameters(model) == []


def test_wrap_ddp_refuses_unused_adapters_before_building_ddp() -> None:
    with pytest.raises(PeftError, match=r"2 trainable parameters .*lin0\.lora_A\.other\.weight.*freeze_unused"):
        wrap_ddp(_two_adapters())


def test_unwrap_model_sees_through_wrappers() -> None:
    model = _mlp()
    assert unwrap_model(nn.DataParallel(model)) is model  # no GPU: DataParallel just holds it
    compiled = nn.Module()
    compiled._orig_mod = model  # where torch.compile's OptimizedModule keeps the model
    assert unwrap_model(nn.DataParallel(compiled)) is model
    assert unwrap_model(model) is model
    assert unused_trainable_parameters(nn.DataParallel(_two_adapters())) == OTHER


# --- FSDP2 plan ---


def _llama(**extra: object) -> nn.Module:
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    return get_peft_model(tiny_llama(), config.model_copy(update=extra))


def test_shard_plan_keeps_frozen_and_trainable_parameters_in_separate_groups() -> None:
    model = _llama()
    assert default_block_types(model) == {"LlamaDecoderLayer"}
    plan = shard_plan(model)
    names = [p for group in plan for p in group.parameters]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    for group in plan:
        assert {grads[p] for p in group.parameters} == {group.trainable}
    layer = "base_model.model.model.layers.0"
    assert [(g.modules, g.trainable) for g in plan[2:4]] == [
        (
            tuple(
                f"{layer}.{m}"
                for m in (
                    "self_attn.q_proj.base_layer",
                    "self_attn.k_proj",
                    "self_attn.v_proj.base_layer",
                    "self_attn.o_proj",
                    "mlp",
                    "input_layernorm",
                    "post_attention_layernorm",
                )
            ),
            False,
        ),
        ((layer,), True),
    ]
    assert plan[-1].modules == ("",) and plan[-1].parameters == (
        "base_model.model.lm_head.modules_to_save.default.weight",
    )
    assert len(plan) == 6  # 2 layers x (frozen, adapters) + root (frozen, adapters)


def test_shard_plan_without_blocks_and_with_an_untouched_block() -> None:
    model = _llama(layers_to_transform=[0])
    plan = shard_plan(model)
    assert plan[0].modules == ("base_model.model.model.layers.1",) and plan[0].trainable is False  # one group
    root_only = shard_plan(_mlp(), block_types=[])
    assert [g.trainable for g in root_only] == [False, True]
    assert root_only[0].modules == (
        "base_model.model.emb",
        "base_model.model.lin0.base_layer",
        "base_model.model.lin1.base_layer",
        "base_model.model.head.base_layer",
    )
    assert "frozen" in root_only[0].describe() and "<root>" in root_only[1].describe()


def test_shard_plan_never_picks_containers_and_splits_trainable_dtypes() -> None:
    model = _two_adapters()
    freeze_unused_adapters(model)
    frozen = shard_plan(model, block_types=[])[0]
    assert "base_model.model.lin0.lora_A.other" in frozen.modules  # not the ModuleDict lora_A: never called
    assert not any(path.endswith(("lora_A", "lora_B")) for path in frozen.modules)

    # bf16 base: adapters are fp32, the modules_to_save copy bf16; FSDP2 wants one dtype per group.
    config = LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"], modules_to_save=["lm_head"])
    model = get_peft_model(tiny_llama().to(torch.bfloat16), config)
    plan = shard_plan(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    for group in plan:
        if group.trainable:
            assert len({dtypes[n] for n in group.parameters}) == 1, group
    root_groups = plan[-3:]
    assert [g.trainable for g in root_groups] == [False, True, True]
    assert root_groups[1].modules == ("base_model.model.lm_head.modules_to_save.default",)
    assert root_groups[2].parameters == (
        "base_model.model.model.embed_tokens.lora_embedding_A.default",
        "base_model.model.model.embed_tokens.lora_embedding_B.default",
    )


# --- saving: main process only, from a gathered state dict, from every rank ---


def _files(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_save_pretrained_takes_a_gathered_state_dict_and_is_main_process(tmp_path: Path) -> None:
    model = _mlp()
    model.save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "given", state_dict=model.state_dict())
    plain, given = _files(tmp_path / "plain"), _files(tmp_path / "given")
    assert plain.keys() == given.keys() and all(torch.equal(plain[k], given[k]) for k in plain)
    model.save_pretrained(tmp_path / "not-main", is_main_process=False)
    assert not (tmp_path / "not-main").exists()


def test_a_state_dict_without_the_adapter_is_refused_and_nothing_written(tmp_path: Path) -> None:
    model = _mlp()
    model.save_pretrained(tmp_path)
    before = (tmp_path / "adapter_model.safetensors").read_bytes()
    partial = {k: v for k, v in model.state_dict().items() if "lin1.lora_B" not in k}
    with pytest.raises(AdapterSaveError, match=r"lacks 1 tensors .*lin1\.lora_B\.weight"):
        model.save_pretrained(tmp_path, state_dict=partial)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before


def test_key_map_follows_tensors_not_names() -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"]), adapter_name="lora")
    assert adapter_key_map(model, "lora") == {
        "base_model.model.lin0.lora_A.lora.weight": "base_model.model.lin0.lora_A.weight",
        "base_model.model.lin0.lora_B.lora.weight": "base_model.model.lin0.lora_B.weight",
    }
    selected = select_adapter_state_dict(model, {k: v.clone() for k, v in model.state_dict().items()}, "lora")
    assert selected.keys() == get_peft_model_state_dict(model, "lora").keys()


def test_distributed_save_in_one_process_equals_the_plain_save(tmp_path: Path) -> None:
    model = _two_adapters()
    model.save_pretrained(tmp_path / "plain")
    save_pretrained(nn.DataParallel(model), tmp_path / "helper")
    for sub in ("", "other"):
        plain, helper = _files(tmp_path / "plain" / sub), _files(tmp_path / "helper" / sub)
        assert plain.keys() == helper.keys() and all(torch.equal(plain[k], helper[k]) for k in plain)
    gathered, plain = gather_adapter_state_dict(model), _files(tmp_path / "plain")
    assert gathered.keys() == plain.keys() and all(torch.equal(v, plain[k]) for k, v in gathered.items())
    assert not any(is_sharded(t) for t in gathered.values())
    with pytest.raises(PeftError, match="unknown adapters"):
        save_pretrained(model, tmp_path / "x", ["nope"])


def test_distributed_save_of_a_plain_module_with_injected_adapters(tmp_path: Path) -> None:
    module = inject_adapter_in_model(LoraConfig(r=2, target_modules=["lin0"]), MLP())
    save_pretrained(module, tmp_path)
    assert set(_files(tmp_path)) == {"base_model.model.lin0.lora_A.weight", "base_model.model.lin0.lora_B.weight"}
    assert '"peft_type": "LORA"' in (tmp_path / "adapter_config.json").read_text()


def test_fsdp1_models_get_a_clear_error() -> None:
    class FullyShardedDataParallel(nn.Module):  # stands in for torch's FSDP1 wrapper: found by class name
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    with pytest.raises(PeftError, match="FSDP1.*shard_model"):
        gather_adapter_state_dict(FullyShardedDataParallel(_mlp()))
