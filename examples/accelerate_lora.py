"""LoRA fine-tune with Hugging Face Accelerate: one script for one process or many.

    # two CPU processes talking over gloo (what the test suite runs):
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_lora.py --cpu --output-dir out
    # on GPUs, with your `accelerate config`:
    accelerate launch examples/accelerate_lora.py --output-dir out
    # a single process:
    python examples/accelerate_lora.py --output-dir out

Note the first command: with accelerate 1.x, ``accelerate launch --cpu --num_processes 2``
starts ONE process (its CPU launcher needs an MPI hostfile for more), and ``--multi_gpu``
on a machine without GPUs starts two processes that each train alone unless the script
asks for the CPU (``Accelerator(cpu=True)``, our ``--cpu``). The script stops with an
error when the processes do not form one group.

The model is a small GPT-2 built from a config (random weights, nothing downloaded), or
any local causal LM with ``--model-dir``. The data is a synthetic language: each sequence
counts from a random start with a random stride (mod the vocabulary), so every token
after the second is predictable. The script prints the held-out loss before and after,
checks that the adapters are identical in every process, and saves the adapter (Hugging
Face PEFT format) from the main process, with ``metrics.json`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a hub

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from peft_core import get_peft_model
from peft_lora import LoraConfig

VOCAB = 48
LENGTH = 16


def build_model(model_dir: str | None = None, seed: int = 0) -> nn.Module:
    """The base model: a local causal LM, or a 2-layer GPT-2 with random weights."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    if model_dir:
        return AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=LENGTH, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def lora_config(rank: int) -> LoraConfig:
    return LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, lora_dropout=0.0
    )


def counting_sequences(count: int, seed: int) -> Tensor:
    """(count, LENGTH) token ids: start + stride * position, mod VOCAB; stride 1 or 2."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (count, 1), generator=generator)
    stride = torch.randint(1, 3, (count, 1), generator=generator)
    return (start + stride * torch.arange(LENGTH)) % VOCAB


def eval_loss(model: nn.Module, ids: Tensor) -> float:
    """Mean next-token loss on ``ids``, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    model.train(was_training)
    return float(loss)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="accelerate-lora-adapter")
    parser.add_argument("--model-dir", default=None, help="a local causal LM (default: a small random GPT-2)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run on CPU (gloo) even if GPUs are present")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise SystemExit(
            f"{launched} processes were launched but accelerate sees {accelerator.num_processes}: each would train "
            "alone. On a machine without GPUs pass --cpu to this script."
        )
    set_seed(args.seed)  # same initial weights in every process
    model = get_peft_model(build_model(args.model_dir, args.seed), lora_config(args.rank))
    if accelerator.is_main_process:
        model.print_trainable_parameters()
    train_ids = counting_sequences(max(args.steps * args.batch_size * accelerator.num_processes, 64), args.seed + 1)
    held_out = counting_sequences(64, args.seed + 2)
    loader = DataLoader(TensorDataset(train_ids), batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    before = eval_loss(model, held_out)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    model.train()
    losses: list[float] = []
    while len(losses) < args.steps:
        for (ids,) in loader:
            loss = model(input_ids=ids, labels=ids).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(accelerator.gather(loss.detach()[None]).mean().item())  # mean over processes
            if len(losses) == args.steps:
                break

    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in unwrapped.parameters() if p.requires_grad]
    fingerprint = torch.stack([p.detach().double().sum() for p in trainable])[None]  # (1, tensors)
    gathered = accelerator.gather(fingerprint)  # (processes, tensors)
    in_sync = bool((gathered == gathered[0]).all())
    after = eval_loss(unwrapped, held_out)

    # get_state_dict gathers what FSDP or DeepSpeed ZeRO-3 shard; under DDP it is the plain state dict.
    state_dict = accelerator.get_state_dict(model)
    unwrapped.save_pretrained(args.output_dir, state_dict=state_dict, is_main_process=accelerator.is_main_process)
    metrics: dict[str, object] = {
        "num_processes": accelerator.num_processes,
        "steps": len(losses),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "eval_loss_before": before,
        "eval_loss_after": after,
        "adapters_in_sync": in_sync,
    }
    if accelerator.is_main_process:
        (Path(args.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"processes: {accelerator.num_processes}, adapters identical in every process: {in_sync}")
        print(f"held-out loss: {before:.4f} before, {after:.4f} after {len(losses)} steps")
        print(f"adapter saved to {args.output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
