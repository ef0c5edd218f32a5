"""Run by ``accelerate launch`` (2 processes, gloo, CPU): every method case through ``accelerator.prepare``.

    # DeepSpeed ZeRO-2 / ZeRO-3 (ENGINE zero2 / zero3)
    PYTHONPATH=tests/distributed:tests python -m accelerate.commands.launch --use_deepspeed \\
        --deepspeed_config_file tests/distributed/configs/ENGINE.json --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no tests/distributed/accelerate_worker.py OUT_DIR ENGINE
    # FSDP2
    PYTHONPATH=tests/distributed:tests python -m accelerate.commands.launch \\
        --config_file tests/distributed/configs/accelerate_fsdp2.yaml \\
        tests/distributed/accelerate_worker.py OUT_DIR fsdp2

Rank r writes ``OUT_DIR/<case>/rank<r>.safetensors`` (the gathered adapter after training)
and ``rank<r>.json``, saves with ``peft_core.integrations.distributed.save_pretrained``
(``saved-by-rank<r>``) and the way the transformers Trainer does through accelerate
(``accelerator.get_state_dict`` then ``save_pretrained(state_dict=..., is_main_process=...)``,
``accelerate-saved-by-rank<r>``): only rank 0's folders may appear.

Two things differ from a GPU run, both because accelerate 1.15 has no CPU path for them:
DeepSpeed gets ``InitProcessGroupKwargs(backend="gloo")`` (without a backend accelerate
sets up DeepSpeed but counts 1 process, and every process is the main one), and FSDP2,
which accelerate switches on only for GPU-like devices, is switched on the way its
``AcceleratorState`` does it on GPUs (``enable_fsdp_on_cpu``), with the plugin that
``accelerate launch`` configured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import training_cases as cases
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs
from records import record

from peft_core.integrations.distributed import gather_adapter_state_dict, save_pretrained, update_and_allocate

ENGINES = ("zero2", "zero3", "fsdp2")


def enable_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """What ``AcceleratorState`` does for FSDP on GPUs, on CPU: the FSDP plugin from the launch, and the FSDP type."""
    state = accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables accelerate launch set
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def make_accelerator(engine: str) -> Accelerator:
    if engine == "fsdp2":
        accelerator = Accelerator(cpu=True)
        enable_fsdp_on_cpu(accelerator)
        assert accelerator.is_fsdp2
    else:
        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
        assert accelerator.distributed_type == DistributedType.DEEPSPEED
        assert accelerator.state.deepspeed_plugin.zero_stage == {"zero2": 2, "zero3": 3}[engine]
    assert accelerator.num_processes == cases.WORLD_SIZE, accelerator.num_processes
    return accelerator


def run_case(accelerator: Accelerator, name: str, folder: Path) -> None:
    case = cases.CASES[name]
    rank = accelerator.process_index
    model = cases.build(name)
    before = cases.frozen_state(model)
    optimizer = cases.make_optimizer(name, model)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    facts: dict[str, Any] = {"wrapper": type(prepared).__name__, "losses": []}
    for step in range(cases.STEPS):
        loss = case.loss(prepared, case.batch(step, rank))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        update_and_allocate(prepared, step)  # the tuner's on_step_end; under DeepSpeed its changes are kept
        facts["losses"].append(loss.item())
    facts["frozen_max_change"] = cases.frozen_max_change(prepared, before)
    save_pretrained(prepared, folder / f"saved-by-rank{rank}")
    state_dict = accelerator.get_state_dict(prepared)  # a collective: FSDP2 and ZeRO-3 gather here
    accelerator.unwrap_model(prepared).save_pretrained(
        folder / f"accelerate-saved-by-rank{rank}", state_dict=state_dict, is_main_process=accelerator.is_main_process
    )
    record(folder, rank, gather_adapter_state_dict(prepared), facts)
    accelerator.free_memory()


def main(out: Path, engine: str) -> None:
    torch.set_num_threads(1)
    accelerator = make_accelerator(engine)
    for name in cases.METHOD_CASES:
        run_case(accelerator, name, out / name)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
    # Everything is written and the process group is destroyed. At interpreter exit, gloo's
    # threads sometimes abort the process in C++ destructors ("terminate called without an
    # active exception"): skip them, as worker.py does.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
