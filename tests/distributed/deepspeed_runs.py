"""DeepSpeed runs of worker.py (``deepspeed.initialize``, ZeRO-2 and ZeRO-3, 2 gloo ranks on CPU).

Every method case trains under each stage and saves with the helper; under ZeRO-3 the
plain saves are tried too (they must refuse), Hugging Face PEFT saves the same way (it
writes 0-element tensors: its ZeRO-3 failure), adapters are loaded into engines that
already exist, and adding an adapter to a partitioned model is refused. The ZeRO configs
are ``configs/zero2.json`` and ``configs/zero3.json`` (ZeRO-3 partitions every parameter:
``stage3_param_persistence_threshold`` is 0, so even tiny adapters are split).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import deepspeed
import torch
import training_cases as cases
from records import record
from safetensors.torch import load_file
from torch import nn

from peft_core import (
    AdapterLoadError,
    AdapterSaveError,
    PeftError,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft_core.engine.partitioning import is_partitioned_now
from peft_core.integrations.deepspeed import update_and_allocate
from peft_core.integrations.distributed import gather_adapter_state_dict, load_adapter_weights, save_pretrained
from peft_lora import LoraConfig
from support.models import MLP

CONFIGS = Path(__file__).parent / "configs"
ENGINES = ("zero2", "zero3")
LOAD_CASE = "method_lora"  # trained under DDP, saved, then loaded into fresh engines


def zero_config(engine: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS / f"{engine}.json").read_text())
    return config


def initialize(name: str, engine: str, model: nn.Module) -> Any:
    """``deepspeed.initialize`` with the case's torch optimizer (ZeRO partitions its state)."""
    ds_engine, *_ = deepspeed.initialize(
        model=model, optimizer=cases.make_optimizer(name, model), config=zero_config(engine)
    )
    return ds_engine


def train_engine(name: str, ds_engine: Any, rank: int, steps: range = range(cases.STEPS)) -> list[float]:
    """``cases.train`` through the engine: ``backward`` and ``step`` are the engine's."""
    case = cases.CASES[name]
    losses = []
    for step in steps:
        loss = case.loss(ds_engine, case.batch(step, rank))
        ds_engine.backward(loss)
        ds_engine.step()
        update_and_allocate(ds_engine, step)
        losses.append(loss.item())
    return losses


def run_training(name: str, engine: str, folder: Path, rank: int) -> None:
    model = cases.build(name)
    before = cases.frozen_state(model)
    ds_engine = initialize(name, engine, model)
    facts: dict[str, Any] = {
        "partitioned": sorted(n for n, p in ds_engine.module.named_parameters() if is_partitioned_now(p)),
        "parameters": sorted(n for n, _ in ds_engine.module.named_parameters()),
        "losses": train_engine(name, ds_engine, rank),
    }
    facts["frozen_max_change"] = cases.frozen_max_change(ds_engine, before)
    if engine == "zero3" and name == LOAD_CASE:
        facts.update(plain_saves(ds_engine, folder, rank))
    save_pretrained(ds_engine, folder / f"saved-by-rank{rank}")
    record(folder, rank, gather_adapter_state_dict(ds_engine), facts)


def plain_saves(ds_engine: Any, folder: Path, rank: int) -> dict[str, Any]:
    """The saves that would write ZeRO-3 placeholders: each must raise, writing nothing."""
    model = ds_engine.module
    facts: dict[str, Any] = {
        "trainable_shapes": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    }
    attempts = {
        "state_dict_error": lambda: get_peft_model_state_dict(model),
        "plain_save_error": lambda: model.save_pretrained(folder / f"plain-save-rank{rank}"),
        # What a trainer's fallback does when it cannot consolidate: the module's own state dict.
        "state_dict_save_error": lambda: model.save_pretrained(
            folder / f"state-dict-save-rank{rank}", state_dict=model.state_dict()
        ),
    }
    for key, attempt in attempts.items():
        try:
            attempt()
        except AdapterSaveError as exc:
            facts[key] = str(exc)
    return facts


def run_incumbent(folder: Path, rank: int) -> None:
    """Hugging Face PEFT under the same ZeRO-3 engine: ``save_pretrained`` from every rank."""
    import peft

    torch.manual_seed(0)
    model = peft.get_peft_model(MLP(), peft.LoraConfig(r=4, target_modules=["lin0", "lin1"]))
    ds_engine = deepspeed.initialize(
        model=model,
        optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cases.SGD_LR),
        config=zero_config("zero3"),
    )[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds_engine.module.save_pretrained(folder / f"saved-by-rank{rank}")
    saved = load_file(folder / f"saved-by-rank{rank}" / "adapter_model.safetensors")
    facts = {"saved_shapes": {k: list(v.shape) for k, v in saved.items()}, "warnings": [str(w.message) for w in caught]}
    record(folder, rank, {}, facts)


def run_loading(engine: str, source: Path, folder: Path, rank: int) -> None:
    """A fresh engine gets the adapter saved in ``source``, then trains one more step."""
    model = cases.build(LOAD_CASE)
    ds_engine = initialize(LOAD_CASE, engine, model)
    facts: dict[str, Any] = {}
    try:  # a second adapter would be neither partitioned nor synchronised
        ds_engine.module.load_adapter(source, "second", is_trainable=True)
    except PeftError as exc:
        facts["add_adapter_error"] = str(exc)
    try:  # the plain load into ZeRO-3 placeholders
        set_peft_model_state_dict(ds_engine.module, load_file(source / "adapter_model.safetensors"))
        facts["plain_load"] = "loaded"
    except AdapterLoadError as exc:
        facts["plain_load"] = str(exc)
    try:  # without the engine the optimizer's master weights would undo the load
        load_adapter_weights(ds_engine.module, source)
        facts["module_load"] = "loaded"
    except PeftError as exc:
        facts["module_load"] = str(exc)
    load_adapter_weights(ds_engine, source)
    record(folder, rank, gather_adapter_state_dict(ds_engine), {}, name="loaded-rank")
    facts["losses"] = train_engine(LOAD_CASE, ds_engine, rank, steps=range(cases.STEPS, cases.STEPS + 1))
    record(folder, rank, gather_adapter_state_dict(ds_engine), facts)


def run_zero_init(folder: Path, rank: int) -> None:
    """A base model built inside ``deepspeed.zero.Init`` (as transformers does under ZeRO-3): refused."""
    with deepspeed.zero.Init(config_dict_or_path=zero_config("zero3")):
        base = MLP()
    facts: dict[str, Any] = {"partitioned": all(is_partitioned_now(p) for p in base.parameters())}
    try:
        get_peft_model(base, LoraConfig(r=4, target_modules=["lin0"]))
    except PeftError as exc:
        facts["error"] = str(exc)
    facts["untouched"] = sorted(n for n, _ in base.named_modules()) == ["", "emb", "head", "lin0", "lin1"]
    record(folder, rank, {}, facts)


def run_all(out: Path, rank: int) -> None:
    """Every DeepSpeed run, in the same order on every rank (each is a collective)."""
    for engine in ENGINES:
        for name in cases.METHOD_CASES:
            run_training(name, engine, out / engine / name, rank)
        run_loading(engine, out / "ddp" / LOAD_CASE / "saved-by-rank0", out / engine / "loading", rank)
    run_incumbent(out / "zero3" / "incumbent", rank)
    run_zero_init(out / "zero3" / "zero_init", rank)
