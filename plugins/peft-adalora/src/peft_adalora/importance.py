"""AdaLoRA's importance scores: where they live and how one step updates them for all layers at once.

Where the state lives: each ``SVDLinear`` keeps, per adapter, an ``ImportanceState`` (in its
``adalora_state`` ModuleDict) holding the averages for that layer's ``A``, ``E`` and ``B``
as non-persistent buffers. So the state moves with the model (``.to``), goes when the
adapter is deleted or unloaded, is never written to a checkpoint (the incumbent does not
save it either), and does not depend on the tuner object, which the engine recreates
whenever adapters change. Nothing else is kept between steps: the budget numbers follow
from the config and the layers, the rank pattern is in the stored config.

The math (the AdaLoRA paper, as the incumbent computes it) for every entry ``w`` of
``A``, ``E``, ``B`` with gradient ``g``, after the optimizer step:

    I = |w * g|                                  sensitivity
    Ibar = beta1 * Ibar + (1 - beta1) * I        smoothed sensitivity
    U = beta2 * U + (1 - beta2) * |I - Ibar|     uncertainty
    s = Ibar * U                                 score of the entry

The incumbent loops over the model's parameters in Python, ~10 tensor ops each; here one
step is six ``torch._foreach_*`` calls over the lists of all layers' tensors (one kernel
launch per op and list on CUDA, one C++ loop on the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

KINDS = ("A", "E", "B")
AVERAGES = tuple(f"avg_{kind}" for kind in KINDS)
UNCERTAINTIES = tuple(f"unc_{kind}" for kind in KINDS)


class ImportanceState(nn.Module):
    """One adapter's importance averages on one layer (buffers ``avg_A``, ``unc_A``, ... ;
    made by the first update), and ``keep``: the surviving triplets once the ranks are final."""

    def __init__(self) -> None:
        super().__init__()
        self.keep: Tensor | None
        self.register_buffer("keep", None, persistent=False)  # (r, 1) bool, set when the ranks are final

    def has_averages(self) -> bool:
        return "avg_A" in self._buffers

    def averages(self) -> list[Tensor]:
        """``[avg_A, avg_E, avg_B]``: the smoothed sensitivities."""
        return [self._buffers[name] for name in AVERAGES]  # type: ignore[misc]

    def uncertainties(self) -> list[Tensor]:
        """``[unc_A, unc_E, unc_B]``."""
        return [self._buffers[name] for name in UNCERTAINTIES]  # type: ignore[misc]

    def start(self, tensors: Sequence[Tensor]) -> None:
        """Zero averages shaped like ``[A, E, B]`` (the incumbent starts from zeros too)."""
        for kind, tensor in zip(KINDS, tensors, strict=True):
            self.register_buffer(f"avg_{kind}", torch.zeros_like(tensor, memory_format=torch.contiguous_format), False)
            self.register_buffer(f"unc_{kind}", torch.zeros_like(tensor, memory_format=torch.contiguous_format), False)

    def reset(self) -> None:
        """Drop the averages (the incumbent's ``reset_ipt``, when the ranks become final)."""
        for kind in KINDS:
            self._buffers.pop(f"avg_{kind}", None)
            self._buffers.pop(f"unc_{kind}", None)


@torch.no_grad()
def update_importance(
    params: list[Tensor],
    grads: list[Tensor],
    averages: list[Tensor],
    uncertainties: list[Tensor],
    beta1: float,
    beta2: float,
) -> None:
    """One EMA step of every entry's smoothed sensitivity and uncertainty (see the module doc).

    ``params``/``grads``/``averages``/``uncertainties`` are aligned lists (all layers' ``A``,
    ``E``, ``B``); the averages are updated in place.
    """
    sensitivity = torch._foreach_mul(params, grads)
    torch._foreach_abs_(sensitivity)
    # lerp: avg + (1 - beta) * (new - avg) = beta * avg + (1 - beta) * new, in one op.
    torch._foreach_lerp_(averages, sensitivity, 1.0 - beta1)
    deviation = torch._foreach_sub(sensitivity, averages)
    torch._foreach_abs_(deviation)
    torch._foreach_lerp_(uncertainties, deviation, 1.0 - beta2)


@torch.no_grad()
def triplet_scores(averages: list[Tensor], uncertainties: list[Tensor]) -> list[Tensor]:
    """The score of each triplet of each layer (lists as ``[A0, E0, B0, A1, ...]``): one (r,) tensor per layer.

    A triplet ``i`` scores ``s(E_i) + mean_j s(A_ij) + mean_k s(B_ki)``: its singular value's
    score plus the mean score of its right and left singular vectors.
    """
    entries = torch._foreach_mul(averages, uncertainties)
    scores = []
    for layer in range(0, len(entries), 3):
        a, e, b = entries[layer : layer + 3]
        scores.append(e.view(-1) + (a.mean(dim=1) + b.mean(dim=0)))
    return scores
