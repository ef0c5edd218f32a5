"""Run by torchrun (2 ranks, gloo, CPU): trains every DDP, FSDP2 and DeepSpeed case and writes what it saw.

    PYTHONPATH=tests/distributed:tests python -m torch.distributed.run --nproc_per_node=2 \
        tests/distributed/worker.py OUT_DIR

For each case, rank r writes ``OUT_DIR/<mode>/<case>/rank<r>.safetensors`` (the gathered
adapter tensors after training) and ``rank<r>.json`` (losses and facts), and calls
``peft_core.integrations.distributed.save_pretrained`` with its own folder
``saved-by-rank<r>``: only rank 0's may appear. Modes: ``ddp`` (the DDP cases and one
case per installed method), ``fsdp`` (FSDP2 through ``shard_model``, and loading into a
sharded model), ``zero2``/``zero3`` (``deepspeed_runs``). The tests compare all of it
with a single-process run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import deepspeed_runs
import torch
import torch.distributed as dist
import training_cases as cases
from records import record

from peft_core import AdapterSaveError, PeftError
from peft_core.integrations.distributed import (
    freeze_unused_adapters,
    gather_adapter_state_dict,
    load_adapter_weights,
    save_pretrained,
    shard_model,
    wrap_ddp,
)


def run_ddp(name: str, folder: Path, rank: int) -> None:
    model = cases.build(name)
    before = cases.frozen_state(model)
    facts: dict[str, Any] = {}
    if name == "two_adapters":
        try:
            wrap_ddp(model)
        except PeftError as exc:
            facts["wrap_error"] = str(exc)
        facts["frozen"] = freeze_unused_adapters(model)
    ddp = wrap_ddp(model)
    facts["losses"] = cases.train(name, ddp, rank)
    facts["frozen_max_change"] = cases.frozen_max_change(ddp, before)
    save_pretrained(ddp, folder / f"saved-by-rank{rank}")
    record(folder, rank, gather_adapter_state_dict(ddp), facts)


def run_fsdp(name: str, folder: Path, rank: int) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model = cases.build(name)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    plan = shard_model(model)
    facts: dict[str, Any] = {
        "plan": [{"modules": g.modules, "trainable": g.trainable, "parameters": g.parameters} for g in plan],
        "local_shapes": {n: list(p.to_local().shape) for n, p in model.named_parameters()},
        "global_shapes": {n: list(p.shape) for n, p in model.named_parameters()},
    }
    facts["losses"] = cases.train(name, model, rank)
    facts["frozen_max_change"] = max(
        (p.full_tensor() - frozen_before[n]).abs().max().item()
        for n, p in model.named_parameters()
        if n in frozen_before
    )
    try:  # the plain save sees DTensor shards and must refuse them
        model.save_pretrained(folder / f"plain-save-rank{rank}")
    except AdapterSaveError as exc:
        facts["plain_save_error"] = str(exc)
    save_pretrained(model, folder / f"saved-by-rank{rank}")
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    model.save_pretrained(folder / f"dcp-saved-by-rank{rank}", state_dict=full, is_main_process=rank == 0)
    record(folder, rank, gather_adapter_state_dict(model), facts)


def run_fsdp_loading(source: Path, folder: Path, rank: int) -> None:
    """A model sharded by FSDP2 gets the adapter saved in ``source`` (each rank its rows), then trains a step."""
    name = deepspeed_runs.LOAD_CASE
    model = cases.build(name)
    shard_model(model)
    facts: dict[str, Any] = {}
    try:
        model.load_adapter(source, "second", is_trainable=True)
    except PeftError as exc:
        facts["add_adapter_error"] = str(exc)
    load_adapter_weights(model, source)
    record(folder, rank, gather_adapter_state_dict(model), {}, name="loaded-rank")
    facts["losses"] = cases.train(name, model, rank, steps=range(cases.STEPS, cases.STEPS + 1))
    record(folder, rank, gather_adapter_state_dict(model), facts)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == cases.WORLD_SIZE
    try:
        for name in [*cases.DDP_CASES, *cases.METHOD_CASES]:
            run_ddp(name, out / "ddp" / name, rank)
        for name in cases.FSDP_CASES:
            run_fsdp(name, out / "fsdp" / name, rank)
        loading_source = out / "ddp" / deepspeed_runs.LOAD_CASE / "saved-by-rank0"
        run_fsdp_loading(loading_source, out / "fsdp" / "loading", rank)
        deepspeed_runs.run_all(out, rank)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Everything is written and the process group is destroyed. At interpreter exit, gloo's
    # threads sometimes abort the process in C++ destructors ("terminate called without an
    # active exception", no Python frame left; about 1 launch in 8 here): skip them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
