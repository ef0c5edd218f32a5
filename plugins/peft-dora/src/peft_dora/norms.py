"""The DoRA weight norm ``||W + s B A||`` per row, without forming ``W + s B A``.

DoRA divides by this norm in every forward; Hugging Face PEFT forms the full product
``B A`` (through an identity matrix of the input width), adds it to ``W`` and takes the
norm, on every call. Here, with ``W`` viewed as rows ``(out, K)``, ``A`` (r, K) and
``B`` (out, r)::

    ||W_o + s (B A)_o||^2 = ||W_o||^2 + 2 s B_o . (W A^T)_o + s^2 B_o (A A^T) B_o^T

``||W_o||^2`` is cached while the base weight does not change; the rest reads ``W``
once (``W A^T``, ``out * K * r`` multiply-adds) and otherwise works on ``r``-wide
matrices: no ``out x K`` temporary. The result is the same norm up to fp32 rounding
(relative 1e-7 unless ``W_o`` and ``-s (B A)_o`` nearly cancel, which a trained adapter
does not do). Norms are always computed without gradients (DoRA treats the norm as a
constant, section 4.3 of the paper) and in fp32 (fp64 for an fp64 weight).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from peft_core.contract import compiling


def squared_row_norms(rows: Tensor) -> Tensor:
    """``||W_o||^2`` for each row of ``rows`` (out, K), fp32 or fp64 (no fp32 copy of a half weight)."""
    with torch.no_grad():
        norms: Tensor = torch.linalg.vector_norm(rows, dim=1, dtype=_accumulation(rows))
        return norms.square()


def _accumulation(tensor: Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)  # fp64 stays fp64


def row_norms(rows: Tensor, a: Tensor, b: Tensor, scaling: float | Tensor, rows_squared: Tensor) -> Tensor:
    """``||rows + scaling * b @ a||`` per row, fp32, by the expansion in the module docstring.

    ``rows`` (out, K) may be a transposed view and half precision; ``a`` (r, K), ``b``
    (out, r); ``rows_squared`` is ``squared_row_norms(rows)``.
    """
    with torch.no_grad():
        accumulate = _accumulation(rows)
        a32, b32 = a.to(accumulate), b.to(accumulate)
        # W A^T in W's dtype (a half weight is not copied to fp32), accumulated in fp32 by matmul.
        projected = (rows @ a.to(rows.dtype).T).to(accumulate)  # (out, r)
        cross = (projected * b32).sum(1)
        gram = a32 @ a32.T  # (r, r)
        low_rank = ((b32 @ gram) * b32).sum(1)
        squared = rows_squared + (2 * scaling) * cross + (scaling * scaling) * low_rank
        return squared.clamp_min_(0).sqrt_()


def direct_row_norms(rows: Tensor, a: Tensor, b: Tensor, scaling: float | Tensor) -> Tensor:
    """The same norms from the dense ``rows + scaling * b @ a`` (fp32 or fp64): for initialisation and merges."""
    with torch.no_grad():
        accumulate = _accumulation(rows)
        dense = rows.to(accumulate) + (b.to(accumulate) @ a.to(accumulate)) * scaling
        norms: Tensor = torch.linalg.vector_norm(dense, dim=1)
        return norms


class NormCache:
    """Norms per adapter, reused while none of the tensors they depend on changed.

    The signature of an entry is each source tensor with its version counter and data
    pointer (optimizer steps, ``copy_`` and ``.data =`` all change it), plus the float
    scaling. In training the factors change every step, so each forward computes the
    norms once; at inference they are computed once. Under ``torch.compile`` nothing is
    cached (the checks would break the graph).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[object, ...], Tensor]] = {}

    def get(
        self, key: str, sources: tuple[Tensor, ...], extra: tuple[object, ...], compute: Callable[[], Tensor]
    ) -> Tensor:
        if compiling():
            return compute()
        signature = (*((t, t._version, t.data_ptr()) for t in sources), *extra)
        entry = self._entries.get(key)
        if entry is not None and _same(entry[0], signature):
            return entry[1]
        value = compute()
        self._entries[key] = (signature, value)
        return value

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    if len(old) != len(new):
        return False
    for before, now in zip(old, new, strict=True):
        if isinstance(before, tuple) and isinstance(now, tuple):
            if before[0] is not now[0] or before[1:] != now[1:]:
                return False
        elif before != now:
            return False
    return True
