"""QLoRA: LoRA on a transformers model quantized to 4-bit NF4 (bitsandbytes), trained on the CPU.

    python examples/qlora_nf4.py --output-dir qlora-adapter          # a tiny random Llama, ~1 min
    python examples/qlora_nf4.py --model-dir PATH --output-dir out   # any local causal LM

Needs peft-bnb (and bitsandbytes): it supplies the LoRA layers for the quantized
``Linear4bit`` layers. The steps are a QLoRA recipe's: load the model in 4 bits (NF4,
double quantization), ``prepare_model_for_kbit_training`` (frozen, norms in fp32,
gradient checkpointing), LoRA on every linear layer, train the adapter alone. The data is
a synthetic language: each sequence counts from a random start with a random stride (mod
the vocabulary), so every token after the second is predictable. The script prints the
held-out loss before and after, saves the adapter (Hugging Face PEFT format), loads it
onto a freshly quantized base and checks it computes the same loss.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a hub

import torch
from torch import Tensor, nn

from peft_bnb import prepare_model_for_kbit_training
from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig

VOCAB = 64
LENGTH = 16


def save_random_llama(folder: str, seed: int = 0) -> None:
    """A 2-layer Llama with random weights (widths multiples of 64: bitsandbytes' CPU kernels need it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=LENGTH,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(folder)


def load_nf4(model_dir: str, device: str) -> nn.Module:
    """The model with every linear layer but the head in 4-bit NF4 with double quantization."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: nn.Module = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=quantization, dtype=compute, device_map=device
        )
    return model


def counting_data(rows: int, seed: int, vocab: int = VOCAB) -> Tensor:
    """(rows, LENGTH) token ids: ``start + i * stride`` mod ``vocab``."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (rows, 1), generator=generator)
    stride = torch.randint(1, 4, (rows, 1), generator=generator)
    return (start + stride * torch.arange(LENGTH)) % vocab


@torch.no_grad()
def held_out_loss(model: nn.Module, ids: Tensor) -> float:
    model.eval()
    loss: Tensor = model(input_ids=ids, labels=ids).loss
    return float(loss)


def train(model: nn.Module, ids: Tensor, steps: int, batch: int, lr: float) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for step in range(steps):
        rows = ids[torch.randint(0, ids.shape[0], (batch,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step:4d}: training loss {loss.item():.3f}", flush=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="a local causal LM (default: a tiny random Llama)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the adapter is saved")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or scratch
        if args.model_dir is None:
            save_random_llama(scratch)
        base = load_nf4(model_dir, args.device)
        vocab = int(base.config.vocab_size)  # type: ignore[union-attr]
        train_ids = counting_data(512, seed=0, vocab=vocab).to(args.device)
        test_ids = counting_data(64, seed=1, vocab=vocab).to(args.device)
        base = prepare_model_for_kbit_training(base, gradient_checkpointing_kwargs={"use_reentrant": True})
        config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        trainable, total = model.get_nb_trainable_parameters()
        print(f"trainable: {trainable:,d} of {total:,d} parameters (4-bit weights count as stored)")
        before = held_out_loss(model, test_ids)
        print(f"held-out loss before: {before:.3f}")
        train(model, train_ids, args.steps, args.batch, args.lr)
        after = held_out_loss(model, test_ids)
        print(f"held-out loss after:  {after:.3f}")
        model.save_pretrained(args.output_dir)

        reloaded = PeftModel.from_pretrained(load_nf4(model_dir, args.device), args.output_dir)
        again = held_out_loss(reloaded, test_ids)
    print(f"reloaded adapter on a fresh 4-bit base: held-out loss {again:.3f} (same: {abs(again - after) < 1e-4})")
    return {"before": before, "after": after, "reloaded": again}


if __name__ == "__main__":
    main()
