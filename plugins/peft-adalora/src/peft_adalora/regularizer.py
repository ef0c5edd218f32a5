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
    # Grouped by (shape, is B): a B (out, r) stack is multiplied as B^T B, without transposed copies.
    groups: dict[tuple[torch.Size, bool, torch.dtype, torch.device], list[Tensor]] = {}
    for layer in layers:
        a, _, b = layer.triplet(adapter_name)
        for factor, is_b in ((a, False), (b, True)):
            groups.setdefault((factor.shape, is_b, factor.dtype, factor.device), []).append(factor)
    count = sum(len(factors) for factors in groups.values())
    if not count:
        return None
    total: Tensor | None = None
    for (_, is_b, dtype, device), factors in groups.items():
        stacked = torch.stack(factors)  # (n, r, k) for A, (n, k, r) for B
        gram = torch.bmm(stacked.transpose(1, 2), stacked) if is_b else torch.bmm(stacked, stacked.transpose(1, 2))
        identity = torch.eye(gram.shape[-1], dtype=dtype, device=device)
        norms = torch.linalg.matrix_norm(gram - identity).sum()
        total = norms if total is None else total + norms
    assert total is not None
    return total / count
