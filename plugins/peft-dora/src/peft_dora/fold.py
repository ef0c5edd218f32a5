"""DoRA's forward and backward with the update folded into the weight: one product instead of three.

DoRA needs ``W + s B A`` for its norm anyway. When many tokens pass through the layer it
is cheaper to form that matrix once per call, scale its rows by ``f = m / ||W + s B A||``
and run a single product ``y = x W'^T + b``, than to run the base product, LoRA's two
thin products (rank-wide, which the CPU runs at a fraction of its full speed) and a
pass over the output to scale it. The backward uses the same folded matrix for the input
gradient (one product again, instead of the base one, a thin one and a sum) and thin
products only for the factors' gradients:

    g_x = g W'                      g_A = s (g (f * B))^T x
    g_B = s f * (g^T (x A^T))       g_m = (sum_t g * (y - b)) / (f n)     g_b = sum_t g

(the last from ``y - b = f * (W x + s B A x)``). The norm stays a constant, as in DoRA
and Hugging Face PEFT. ``W'`` is recomputed in the backward rather than kept, so memory
is what the unfolded path keeps (the output instead of the pre-scale product).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def worth_folding(tokens: int, in_features: int, out_features: int) -> bool:
    """Whether forming ``W'`` (about ``in * out`` multiply-adds per rank and a pass over it)
    costs less than the unfolded path's per-token work (about ``tokens * (in + out)``)."""
    return tokens * (in_features + out_features) >= in_features * out_features


class FoldedDora(torch.autograd.Function):
    """``y = x W'^T + b`` with ``W' = f * (W + s B A)``; also returns the norm (no gradient)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight_rows: Tensor,
        lora_a: Tensor,
        lora_b: Tensor,
        magnitude: Tensor,
        bias: Tensor | None,
        scaling: float,
    ) -> tuple[Tensor, Tensor]:
        dense = torch.addmm(weight_rows, lora_b, lora_a, alpha=scaling)  # (out, in)
        norm = torch.linalg.vector_norm(dense, dim=1)
        factor = magnitude / norm
        output = F.linear(x, dense.mul_(factor[:, None]), bias)
        ctx.scaling = scaling
        ctx.mark_non_differentiable(norm)
        ctx.save_for_backward(x, weight_rows, lora_a, lora_b, factor, norm, output, bias)
        return output, norm

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _norm_grad: Tensor | None) -> tuple[Tensor | None, ...]:
        x, weight_rows, lora_a, lora_b, factor, norm, output, bias = ctx.saved_tensors
        scaling = ctx.scaling
        needs_x, _, needs_a, needs_b, needs_m, needs_bias, _ = ctx.needs_input_grad
        grad_x = grad_a = grad_b = grad_m = grad_bias = None
        if needs_x:
            dense = torch.addmm(weight_rows, lora_b, lora_a, alpha=scaling).mul_(factor[:, None])
            grad_x = grad @ dense
        if needs_a:
            grad_a = (grad @ (lora_b * factor[:, None])).T @ x
            grad_a.mul_(scaling)
        if needs_b:
            grad_b = (grad.T @ (x @ lora_a.T)).mul_(factor[:, None] * scaling)
        if needs_m:
            summed = (grad * output).sum(0)
            if bias is not None:
                summed = summed - bias * grad.sum(0)
            grad_m = summed / (factor * norm)
        if needs_bias:
            grad_bias = grad.sum(0)
        return grad_x, None, grad_a, grad_b, grad_m, grad_bias, None
