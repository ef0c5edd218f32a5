"""The math of OFT's rotations: skew-symmetric blocks, the Cayley transform, COFT, block products.

Shapes: ``vec`` (blocks, b (b - 1) / 2) holds the upper triangles of the skew-symmetric
``Q`` (blocks, b, b); ``R`` (blocks, b, b) are the rotations (blocks = 1 when shared).
Both transforms are Hugging Face PEFT's: exact ``R = (I - Q)(I + Q)⁻¹``, and its Neumann
form ``R = I + 2 (Q + Q² + ... + Q^(n-2)) + Q^(n-1)`` (n terms; it equals the exact
transform's transpose up to the truncated powers of Q, which is how PEFT defines it).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn


def split_features(features: int, r: int, block_size: int) -> tuple[int, int]:
    """``(r, block_size)`` with ``r * block_size == features``; the given one moved to the nearest
    divisor (ties down) with a warning if it does not divide, as Hugging Face PEFT does."""
    given = block_size if r == 0 else r
    if features % given == 0 and given <= features:
        fitted = given
    elif given >= features:
        fitted = features
    else:
        higher = next(k for k in range(given, features + 1) if features % k == 0)
        lower = next(k for k in range(given, 0, -1) if features % k == 0 or k == 1)
        fitted = lower if given - lower <= higher - given else higher
    if fitted != given:
        name = "oft_block_size" if r == 0 else "r"
        warnings.warn(f"Invalid `{name}` ({given})! Adjusted `{name}` to ({fitted}).", UserWarning, stacklevel=6)
    return (features // fitted, fitted) if r == 0 else (fitted, features // fitted)


class Rotation(nn.Module):
    """One adapter's rotation parameters on one layer: ``weight`` (blocks, b (b - 1) / 2)."""

    def __init__(self, blocks: int, block_size: int, device: torch.device | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(blocks, block_size * (block_size - 1) // 2, device=device))
        self.rows: Tensor
        self.cols: Tensor
        rows, cols = torch.triu_indices(block_size, block_size, 1, device=device)
        self.register_buffer("rows", rows, persistent=False)  # not in checkpoints, as in PEFT
        self.register_buffer("cols", cols, persistent=False)

    def skew(self, vec: Tensor) -> Tensor:
        """``Q`` (blocks, b, b): ``vec`` above the diagonal, ``-vec`` below."""
        upper = vec.new_zeros(vec.shape[0], self.block_size, self.block_size)
        upper[:, self.rows, self.cols] = vec
        return upper - upper.transpose(1, 2)

    def cayley(self, vec: Tensor, neumann: bool, terms: int) -> Tensor:
        """The rotations ``R`` (blocks, b, b) of ``vec`` (see the module docstring)."""
        q = self.skew(vec)
        eye = torch.eye(self.block_size, device=vec.device, dtype=vec.dtype).expand_as(q)
        if not neumann:
            solved: Tensor = torch.linalg.solve(eye + q, eye - q, left=False)
            return solved
        r = eye.clone()
        if terms > 1:
            r = r + 2.0 * q
        if terms > 2:
            power = torch.bmm(q, q)
            for _ in range(max(terms - 3, 1)):  # Q² ... Q^(n-2) doubled (n = 3 counts as 4, as in PEFT)
                r = r + 2.0 * power
                power = torch.bmm(power, q)
            r = r + power
        return r

    def project(self, vec: Tensor, eps: float) -> Tensor:
        """COFT: each block's ``Q`` scaled into the Frobenius ball of radius ``eps / sqrt(blocks)``."""
        q = self.skew(vec)
        radius = torch.tensor(eps, dtype=vec.dtype, device=vec.device) / math.sqrt(vec.shape[0])
        norm = torch.linalg.matrix_norm(q, keepdim=True)
        return torch.where(norm <= radius, q, radius * (q / norm))[:, self.rows, self.cols]


def drop_blocks(r: Tensor, p: float) -> Tensor:
    """Module dropout: ``int(p * blocks)`` random blocks of ``r`` replaced by the identity."""
    count = r.shape[0]
    if count == 1:
        return r  # a shared block: nothing to drop, as PEFT's dropout layer
    mask = torch.zeros(count, 1, 1, device=r.device, dtype=r.dtype)
    mask[torch.randperm(count, device=r.device)[: int(p * count)]] = 1.0
    return r + mask * (torch.eye(r.shape[-1], device=r.device, dtype=r.dtype) - r)


def rotate_rows(rows: Tensor, r: Tensor) -> Tensor:
    """``rows`` (n, blocks * b) with each b-wide block multiplied by its ``r`` block: ``x_i @ R_i``.

    A shared block (``r`` of one block) is one product; otherwise one batched product over
    the blocks, reading ``rows`` in place through a strided view (no copy in).
    """
    n, features = rows.shape
    size = r.shape[-1]
    if r.shape[0] == 1:
        return (rows.reshape(-1, size) @ r[0]).view(n, features)
    return torch.bmm(rows.view(n, -1, size).transpose(0, 1), r).transpose(0, 1).reshape(n, features)
