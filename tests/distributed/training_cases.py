"""Training runs shared by the torchrun worker and the single-process reference in the tests.

A case builds the same model on every rank (same seed), feeds rank ``r`` its slice of
each global batch and trains ``STEPS`` steps with AdamW. Run in one process on the whole
global batch (the rank slices concatenated in rank order) it must give the same adapter:
DDP and FSDP average gradients over ranks, and every loss here is a mean over equally
sized slices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from peft_core import PeftModel, get_peft_model
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.models import MLP, tiny_llama

WORLD_SIZE = 2
STEPS = 4
ROWS_PER_RANK = 2
LR = 1e-2


@dataclass(frozen=True)
class Case:
    build: Callable[[], PeftModel]
    batch: Callable[[int, int], dict[str, Tensor]]  # (step, rank) -> model inputs for that rank
    loss: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    checkpointing: bool | None = None  # None: off; else use_reentrant


def _mlp_batch(step: int, rank: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return {
        "x": torch.randint(0, 20, (ROWS_PER_RANK, 6), generator=generator),
        "labels": torch.randint(0, 3, (ROWS_PER_RANK,), generator=generator),
    }


def _mlp_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    logits = model(batch["x"]).mean(1)  # (rows, classes)
    return nn.functional.cross_entropy(logits, batch["labels"])


def _token_batch(step: int, rank: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return {"input_ids": torch.randint(1, 64, (ROWS_PER_RANK, 8), generator=generator)}


def _lm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    loss: Tensor = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    return loss


def _lora_mlp() -> PeftModel:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["emb", "lin0", "lin1"], modules_to_save=["head"])
    return get_peft_model(MLP(), config)


def _ia3_mlp() -> PeftModel:
    torch.manual_seed(0)
    config = IA3Config(
        target_modules=["lin0", "lin1"], feedforward_modules=["lin1"], modules_to_save=["head"], init_ia3_weights=False
    )
    return get_peft_model(MLP(), config)


def _two_adapters() -> PeftModel:
    """The active adapter plus a second trainable one that no forward uses."""
    model = _lora_mlp()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["lin0"]))
    return model


def _lora_llama() -> PeftModel:
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["lm_head"]
    )
    return get_peft_model(tiny_llama(seed=0), config)


def _lora_llama_bf16() -> PeftModel:
    """bf16 base: fp32 adapters (on the embeddings too) and a bf16 copy of lm_head, all trained."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"], modules_to_save=["lm_head"])
    return get_peft_model(tiny_llama(seed=0).to(torch.bfloat16), config)


CASES: dict[str, Case] = {
    "lora_mlp": Case(_lora_mlp, _mlp_batch, _mlp_loss),
    "ia3_mlp": Case(_ia3_mlp, _mlp_batch, _mlp_loss),
    "two_adapters": Case(_two_adapters, _mlp_batch, _mlp_loss),
    "lora_llama": Case(_lora_llama, _token_batch, _lm_loss),
    "lora_llama_checkpointing": Case(_lora_llama, _token_batch, _lm_loss, checkpointing=False),
    "lora_llama_checkpointing_reentrant": Case(_lora_llama, _token_batch, _lm_loss, checkpointing=True),
    "lora_llama_bf16": Case(_lora_llama_bf16, _token_batch, _lm_loss),
}
DDP_CASES = ["lora_mlp", "ia3_mlp", "two_adapters", "lora_llama_checkpointing", "lora_llama_checkpointing_reentrant"]
FSDP_CASES = ["lora_llama", "ia3_mlp", "lora_llama_checkpointing", "lora_llama_bf16"]
# Largest |distributed - single process| allowed in an adapter tensor after STEPS AdamW steps (fp32).
# The sums run in another order; AdamW's g / sqrt(v) turns the last-bit differences of tiny gradients
# into ~1e-5 in the llama runs (measured: MLP 1.2e-7, llama DDP 3.2e-6, llama FSDP 1.3e-5).
TOLERANCE = {"mlp": 1e-6, "llama": 5e-5}


def tolerance(name: str) -> float:
    return TOLERANCE["llama" if "llama" in name else "mlp"]


def build(name: str) -> PeftModel:
    """The case's model in train mode, gradient checkpointing switched on where the case asks."""
    case = CASES[name]
    model = case.build()
    model.train()
    if case.checkpointing is not None:
        kwargs = {"use_reentrant": case.checkpointing}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.23 deprecates the old name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def global_batch(name: str, step: int) -> dict[str, Tensor]:
    """All ranks' slices of one step, concatenated in rank order."""
    slices = [CASES[name].batch(step, r) for r in range(WORLD_SIZE)]
    return {key: torch.cat([s[key] for s in slices]) for key in slices[0]}


def train(name: str, model: nn.Module, rank: int | None) -> list[float]:
    """``STEPS`` AdamW steps on rank ``rank``'s slices (None: the global batch); returns the losses."""
    case = CASES[name]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for step in range(STEPS):
        batch = global_batch(name, step) if rank is None else case.batch(step, rank)
        loss = case.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def reference(name: str) -> PeftModel:
    """The case trained in this process on the global batches, without checkpointing."""
    case = CASES[name]
    model = case.build()
    model.train()
    if name == "two_adapters":
        from peft_core.integrations.distributed import freeze_unused_adapters

        freeze_unused_adapters(model)
    train(name, model, rank=None)
    return model


@functools.cache
def reference_state(name: str) -> dict[str, Tensor]:
    """The single-process adapter state of a case after training (checkpoint keys), cached."""
    from peft_core import get_peft_model_state_dict

    return {k: v.clone() for k, v in get_peft_model_state_dict(reference(name)).items()}


def logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The model's output scores for a case's batch, without gradients, in eval mode."""
    model.eval()
    with torch.no_grad():
        if "x" in batch:
            out: Tensor = model(batch["x"])
            return out
        scores: Tensor = model(input_ids=batch["input_ids"]).logits
        return scores


def initial_state(name: str, adapter_name: str = "default") -> dict[str, Tensor]:
    """The untrained adapter of a case (checkpoint keys)."""
    from peft_core import get_peft_model_state_dict

    return get_peft_model_state_dict(CASES[name].build(), adapter_name)


def fresh_base(name: str) -> nn.Module:
    """The case's base model with its initial weights and no adapter."""
    return CASES[name].build().unload()
