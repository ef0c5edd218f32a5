"""Training runs shared by the launched workers and the single-process reference in the tests.

A case builds the same model on every rank (same seed), feeds rank ``r`` its slice of
each global batch and trains ``STEPS`` steps (AdamW, or plain SGD for the method sweep).
Run in one process on the whole global batch (the rank slices concatenated in rank
order) it must give the same adapter: DDP, FSDP and DeepSpeed average gradients over
ranks, and every loss here is a mean over equally sized slices.

``METHOD_CASES`` (``method_<name>``) are one per installed tuner, from
``support.method_configs``: trained with SGD, whose update is the averaged gradient itself
(AdamW's ``g / sqrt(v)`` would hide a gradient summed instead of averaged).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from peft_core import PeftModel, get_peft_model
from peft_core.integrations.deepspeed import gathered
from peft_core.integrations.distributed import is_sharded, unwrap_model
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.method_configs import METHOD_CONFIGS, installed_methods, method_config
from support.models import MLP, tiny_llama

WORLD_SIZE = 2
STEPS = 4
ROWS_PER_RANK = 2
LR = 1e-2
SGD_LR = 0.5


@dataclass(frozen=True)
class Case:
    build: Callable[[], PeftModel]
    batch: Callable[[int, int], dict[str, Tensor]]  # (step, rank) -> model inputs for that rank
    loss: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    checkpointing: bool | None = None  # None: off; else use_reentrant
    optimizer: str = "adamw"  # or "sgd"


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


def _method_case(name: str) -> Case:
    entry = METHOD_CONFIGS[name]

    def build() -> PeftModel:
        torch.manual_seed(0)
        return get_peft_model(MLP() if entry.model == "mlp" else tiny_llama(seed=0), method_config(name))

    if entry.model == "mlp":
        return Case(build, _mlp_batch, _mlp_loss, optimizer="sgd")
    return Case(build, _token_batch, _lm_loss, optimizer="sgd")


METHOD_CASES = [f"method_{name}" for name in installed_methods()]
CASES.update({f"method_{name}": _method_case(name) for name in installed_methods()})
DDP_CASES = ["lora_mlp", "ia3_mlp", "two_adapters", "lora_llama_checkpointing", "lora_llama_checkpointing_reentrant"]
FSDP_CASES = ["lora_llama", "ia3_mlp", "lora_llama_checkpointing", "lora_llama_bf16"]
# Largest |distributed - single process| allowed in an adapter tensor after STEPS AdamW steps (fp32).
# The sums run in another order; AdamW's g / sqrt(v) turns the last-bit differences of tiny gradients
# into ~1e-5 in the llama runs (measured: MLP 1.2e-7, llama DDP 3.2e-6, llama FSDP 1.3e-5).
TOLERANCE = {"mlp": 1e-6, "llama": 5e-5}
# SGD (the method sweep): the update is -lr * gradient, so only the summation order differs.
SGD_TOLERANCE = 1e-6


def tolerance(name: str) -> float:
    if CASES[name].optimizer == "sgd":
        return SGD_TOLERANCE
    return TOLERANCE["llama" if "llama" in name else "mlp"]


def method_name(name: str) -> str:
    """The ``METHOD_CONFIGS`` entry of a ``method_<name>`` case."""
    return name.removeprefix("method_")


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """The case's optimizer over ``model``'s trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if CASES[name].optimizer == "sgd":
        return torch.optim.SGD(params, lr=SGD_LR)
    return torch.optim.AdamW(params, lr=LR)


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


def train(name: str, model: nn.Module, rank: int | None, steps: range = range(STEPS)) -> list[float]:
    """Optimizer steps on rank ``rank``'s slices (None: the global batch); returns the losses.

    After each step the tuner's ``on_step_end`` runs (``update_and_allocate``), as
    ``PeftTrainer`` does it.
    """
    case = CASES[name]
    optimizer = make_optimizer(name, model)
    peft_model = unwrap_model(model)
    losses = []
    for step in steps:
        batch = global_batch(name, step) if rank is None else case.batch(step, rank)
        loss = case.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if isinstance(peft_model, PeftModel):
            peft_model.update_and_allocate(step)
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


def frozen_state(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the frozen parameters, before any wrapping (the base weights)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def frozen_max_change(model: nn.Module, before: dict[str, Tensor]) -> float:
    """Largest change of the parameters in ``before`` since then: FSDP2 shards and ZeRO-3
    partitions are gathered first (a collective then: every rank calls it)."""
    frozen = {n: p for n, p in unwrap_model(model).named_parameters() if n in before}
    assert frozen.keys() == before.keys(), sorted(set(before) - set(frozen))
    with gathered(frozen.values()):
        return max(
            ((p.full_tensor() if is_sharded(p) else p.detach()) - before[n]).abs().max().item()
            for n, p in frozen.items()
        )


@functools.cache
def reference_logits(name: str, step: int = 0) -> Tensor:
    """The single-process trained model's outputs on global batch ``step`` (cached)."""
    return logits(reference(name), global_batch(name, step))


def reference_after_loading(name: str, source: Path, steps: range) -> dict[str, Tensor]:
    """The adapter saved in ``source``, loaded into the case's fresh base in one process and trained ``steps``."""
    from peft_core import get_peft_model_state_dict

    model = PeftModel.from_pretrained(fresh_base(name), source, is_trainable=True)
    train(name, model, rank=None, steps=steps)
    return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
