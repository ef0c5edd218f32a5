"""The rank budget schedule and one allocation step (``update_and_allocate``) for one adapter.

The budget is the number of triplets (ranks) kept over all adapted modules. With
``b0 = init_r * n`` and ``bT = target_r * n`` for ``n`` modules, and ``T = total_step``:

    step <= tinit:                  b0                 warm-up, nothing pruned
    tinit < step < T - tfinal:      bT + (b0 - bT) * (1 - (step - tinit) / (T - tfinal - tinit))**3
                                    (rounded down), pruned every ``deltaT`` steps
    step >= T - tfinal:             bT                 ranks fixed

Pruning keeps the ``budget`` best-scoring triplets (``peft_adalora.importance``) over all
modules: the ``b0 - budget`` lowest scores (and any tied with the highest of them) get
``E = 0``. A triplet pruned at one allocation may return at the next (it keeps its
``A``/``B`` rows and its ``E`` is trained again): the incumbent's behaviour. At step
``T - tfinal`` the pattern becomes final: the importance averages are dropped and later
steps only keep the pruned ``E`` entries at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from peft_adalora.config import RANK_KEY, AdaLoraConfig, rank_mask
from peft_adalora.importance import triplet_scores, update_importance
from peft_adalora.layer import SVDLinear
from peft_core.contract import ConfigError, PeftError


def budget_schedule(config: AdaLoraConfig, step: int, initial: int, target: int) -> tuple[int, bool]:
    """``(budget, prune)`` at ``step``: the number of triplets to keep and whether this step prunes.

    ``initial``/``target``: the budgets ``init_r * n`` and ``target_r * n``. The same integer
    and float arithmetic as the incumbent, so both prune at the same steps to the same budgets.
    """
    total = config.total_step
    assert total is not None  # the config validates it
    if step <= config.tinit:
        return initial, False
    if step > total - config.tfinal:
        return target, True
    remaining = 1 - (step - config.tinit) / (total - config.tfinal - config.tinit)
    return int((initial - target) * (remaining**3) + target), step % config.deltaT == 0


def allocate(
    layers: Sequence[tuple[str, SVDLinear]], adapter_name: str, config: AdaLoraConfig, step: int
) -> dict[str, list[bool]] | None:
    """One ``update_and_allocate(step)`` for one adapter; returns the new rank pattern, if it changed.

    Call after the optimizer step and before the gradients are cleared. Steps before
    ``total_step - tfinal`` update the importance scores (and prune at the schedule's
    steps), step ``total_step - tfinal`` fixes the final pattern, later steps re-apply it.
    """
    if not layers:
        return None
    if config.target_r > config.init_r:
        raise ConfigError(
            f"adapter {adapter_name!r}: target_r={config.target_r} > init_r={config.init_r}, but AdaLoRA can only "
            "prune ranks; set target_r <= init_r"
        )
    merged = [path for path, layer in layers if adapter_name in layer.merged_adapters]
    if merged:
        raise PeftError(f"adapter {adapter_name!r} is merged into {merged[:3]}; unmerge it before update_and_allocate")
    total = config.total_step
    assert total is not None
    final_step = total - config.tfinal
    initial, target = config.init_r * len(layers), config.target_r * len(layers)
    if step < final_step:
        _update(layers, adapter_name, config)
        budget, prune = budget_schedule(config, step, initial, target)
        return _prune(layers, adapter_name, initial - budget) if prune else None
    if step == final_step:
        return _prune(layers, adapter_name, initial - target, final=True)
    _reapply(layers, adapter_name, config, final_step)
    return None


def _update(layers: Sequence[tuple[str, SVDLinear]], adapter_name: str, config: AdaLoraConfig) -> None:
    """Gather every layer's tensors and update all importance averages in one vectorised step."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    averages: list[Tensor] = []
    uncertainties: list[Tensor] = []
    found = 0
    for _, layer in layers:
        triplet = layer.triplet(adapter_name)
        state = layer.importance(adapter_name)
        if not state.has_averages():
            state.start(triplet)
        for param in triplet:
            grad = param.grad
            if grad is None:  # unused in this step's forward: no sensitivity
                grad = torch.zeros_like(param)
            else:
                found += 1
            params.append(param.detach())
            grads.append(grad)
        averages.extend(state.averages())
        uncertainties.extend(state.uncertainties())
    if not found:
        raise PeftError(
            f"update_and_allocate found no gradients for adapter {adapter_name!r}: AdaLoRA scores ranks by "
            "|weight * gradient|, so call it after optimizer.step() and before optimizer.zero_grad()"
        )
    update_importance(params, grads, averages, uncertainties, config.beta1, config.beta2)


@torch.no_grad()
def _prune(
    layers: Sequence[tuple[str, SVDLinear]], adapter_name: str, count: int, final: bool = False
) -> dict[str, list[bool]]:
    """Zero the ``E`` of the ``count`` lowest-scoring triplets (ties with the highest of them too);
    returns the rank pattern (True: kept) by ``<module path>.lora_E``. ``final``: the pattern is
    kept for the steps after, and the importance averages are dropped."""
    states = [layer.importance(adapter_name) for _, layer in layers]
    if not all(state.has_averages() for state in states):
        raise PeftError(
            f"adapter {adapter_name!r} has no importance scores to allocate ranks with: call "
            "update_and_allocate(step) after every optimizer step from the start of training"
        )
    averages = [t for state in states for t in state.averages()]
    uncertainties = [t for state in states for t in state.uncertainties()]
    scores = triplet_scores(averages, uncertainties)
    flat = torch.cat(scores)
    if count <= 0:
        keep = torch.ones_like(flat, dtype=torch.bool)
    else:
        threshold = torch.kthvalue(flat, min(count, flat.numel())).values
        keep = flat > threshold
    pattern: dict[str, list[bool]] = {}
    kept = keep.tolist()  # one device sync for all layers
    start = 0
    for (path, layer), score in zip(layers, scores, strict=True):
        stop = start + score.numel()
        layer_keep = keep[start:stop]
        layer.lora_E[adapter_name].masked_fill_(~layer_keep.view(-1, 1), 0.0)
        pattern[f"{path}.{RANK_KEY}"] = kept[start:stop]
        if final:
            state = layer.importance(adapter_name)
            state.reset()
            state.keep = layer_keep.view(-1, 1).clone()
        start = stop
    return pattern


@torch.no_grad()
def _reapply(
    layers: Sequence[tuple[str, SVDLinear]], adapter_name: str, config: AdaLoraConfig, final_step: int
) -> None:
    """After the final allocation: keep the pruned triplets' ``E`` at zero."""
    for path, layer in layers:
        state = layer.importance(adapter_name)
        if state.keep is None:
            mask = rank_mask(config.rank_pattern, path)
            if mask is None:
                raise PeftError(
                    f"adapter {adapter_name!r} has no final rank pattern for {path!r}: update_and_allocate must run "
                    f"at step total_step - tfinal = {final_step}, where the ranks become final"
                )
            state.keep = torch.tensor(mask, dtype=torch.bool, device=layer.lora_E[adapter_name].device).view(-1, 1)
        layer.lora_E[adapter_name].masked_fill_(~state.keep, 0.0)
