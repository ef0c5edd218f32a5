"""AdaLoRA's orthogonality regulariser: ``R = mean over factors of ||P P^T - I||_F``.

``P`` runs over every ``A`` (r, in) and every ``B^T`` (r, out) of the adapter, so that the
rows of ``A`` and the columns of ``B`` stay close to orthonormal (the SVD form the
importance scores assume). The training loss gets ``orth_reg_weight * R``.

The incumbent computes one Gram matrix per parameter in a Python loop (5 ops each); here
the factors are grouped by shape, each group stacked and multiplied in one ``bmm``, and
all norms taken at once: a handful of ops whatever the number of layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from peft_adalora.layer import SVDLinear


def orthogonality_penalty(layers: Sequence[SVDLinear], adapter_name: str) -> Tensor | None:
    """``mean_P ||P P^T - I||_F`` over the adapter's ``A`` and ``B^T`` in ``layers``; None without layers."""
    groups: dict[tuple[torch.Size, torch.dtype, torch.device], list[Tensor]] = {}
    for layer in layers:
        a, _, b = layer.triplet(adapter_name)
        for factor in (a, b.t()):  # B^T B = (B^T)(B^T)^T: the columns of B, as rows
            groups.setdefault((factor.shape, factor.dtype, factor.device), []).append(factor)
    count = sum(len(factors) for factors in groups.values())
    if not count:
        return None
    total: Tensor | None = None
    for (shape, dtype, device), factors in groups.items():
        stacked = torch.stack(factors)  # (n, r, k)
        gram = torch.bmm(stacked, stacked.transpose(1, 2))  # (n, r, r)
        identity = torch.eye(shape[0], dtype=dtype, device=device)
        norms = torch.linalg.matrix_norm(gram - identity).sum()
        total = norms if total is None else total + norms
    assert total is not None
    return total / count
