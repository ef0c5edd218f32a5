"""Model-merging rules for weighted combinations of task tensors (TIES, DARE, magnitude pruning).

Each rule maps tensors ``t_i`` of one shape and weights ``w_i`` to one tensor:

- ``linear`` (task arithmetic): ``sum_i w_i t_i``.
- ``magnitude_prune``: keep the ``density`` fraction of each ``t_i``'s entries largest in
  magnitude (the rest zero), then ``sum_i w_i t_i``.
- ``ties`` (Yadav et al. 2023): prune by magnitude; elect a sign per entry (the sign of
  ``sum_i t_i``, "total", or of ``sum_i sign(t_i)``, "frequency"; ties elect +); average
  the weighted entries that agree with it: ``sum_{i agrees} w_i t_i / max(1, #agree)``.
- ``dare_linear`` / ``dare_ties`` (Yu et al. 2023): drop each entry with probability
  ``1 - density`` (a Bernoulli mask from torch's generator) and rescale the kept ones by
  ``1 / density``; then the linear sum, or the TIES sign election and average.

The operations (and the random draws, in order) are Hugging Face PEFT's, so its numbers
come out at the same seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from peft_core.contract import ConfigError

RULES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
NEEDS_DENSITY = frozenset({"ties", "dare_linear", "dare_ties", "magnitude_prune"})
SIGN_METHODS = ("total", "frequency")


def check_options(rule: str, density: float | None, majority_sign_method: str) -> None:
    """``ConfigError`` for a density or sign method that ``rule`` cannot use."""
    if rule in NEEDS_DENSITY and density is None:
        raise ConfigError(
            f"combination_type {rule!r} prunes each adapter: pass density=, the fraction of entries to keep "
            "(a value in [0, 1], e.g. density=0.5)"
        )
    if density is not None and not 0 <= density <= 1:
        raise ConfigError(f"density={density!r} is outside [0, 1]; pass the fraction of entries to keep, e.g. 0.5")
    if majority_sign_method not in SIGN_METHODS:
        raise ConfigError(f"majority_sign_method={majority_sign_method!r} is not one of {SIGN_METHODS}")


def merge(
    rule: str, tensors: Sequence[Tensor], weights: Tensor, density: float | None, majority_sign_method: str
) -> Tensor:
    """One tensor from ``tensors`` (same shape) and ``weights`` (1-D, one per tensor) by ``rule``."""
    if rule in NEEDS_DENSITY:
        assert density is not None
        random = rule.startswith("dare")
        tensors = [_pruned(t, density, random) for t in tensors]
    stacked = torch.stack(list(tensors), dim=0)
    weighted = stacked * weights.view(weights.shape + (1,) * (stacked.dim() - 1))
    if rule not in ("ties", "dare_ties"):
        return weighted.sum(dim=0)
    agrees = _majority_sign_mask(stacked, majority_sign_method)
    return (weighted * agrees).sum(dim=0) / torch.clamp(agrees.sum(dim=0), min=1.0)


def _pruned(tensor: Tensor, density: float, random: bool) -> Tensor:
    """Magnitude pruning (keep the top ``density`` fraction), or DARE's random drop with rescaling."""
    if density >= 1:
        warnings.warn(f"density={density} keeps every entry: no pruning", UserWarning, stacklevel=4)
        return tensor
    if random:
        kept = torch.bernoulli(torch.full_like(tensor, density))
        return tensor * kept / density
    mask = torch.zeros_like(tensor).reshape(-1)
    top = torch.topk(tensor.abs().reshape(-1), k=int(density * tensor.numel()), largest=True)
    mask[top[1]] = 1
    return tensor * mask.reshape(tensor.shape)


def _majority_sign_mask(stacked: Tensor, method: str) -> Tensor:
    """Per entry, whether each tensor's sign is the elected one (stacked on dim 0)."""
    signs = stacked.sign()
    votes = stacked.sum(dim=0) if method == "total" else signs.sum(dim=0)
    elected = torch.where(votes >= 0, 1, -1)
    return signs == elected
