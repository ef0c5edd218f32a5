"""The LoRA update of one adapter, ``result + scaling * (x A^T) B^T``, with no extra passes.

Profiling the training step showed the textbook form ``result + B(A(x)) * scaling``
spending its overhead on output-sized passes: the scaling multiply and the add (each
also in backward), and a fresh output-sized buffer per op. Here the scale rides on the
product (``addmm``'s ``alpha``, or the small ``(tokens, r)`` hidden tensor when it is a
tensor) and the add is the product's accumulate, into the base output in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peft_core.contract import compiling, records_grad
from peft_lora.dropout import input_dropout


def adapter_input(x: Tensor, dtype: torch.dtype, dropout: nn.Module) -> Tensor:
    """``x`` in the adapter's dtype, through the adapter's dropout (skipped when p = 0).

    An ``nn.Dropout`` keeps its meaning (``p``, ``train()``/``eval()``) and runs as
    ``input_dropout``: the same mask semantics, a cheaper mask on the CPU.
    """
    if x.dtype != dtype:
        x = x.to(dtype)
    if isinstance(dropout, nn.Identity):
        return x
    if type(dropout) is nn.Dropout:
        return input_dropout(x, dropout.p, dropout.training)
    dropped: Tensor = dropout(x)
    return dropped


def add_low_rank(result: Tensor, hidden: Tensor, lora_b: Tensor, scaling: float | Tensor) -> Tensor:
    """``result + scaling * hidden @ lora_b.T`` for ``hidden`` (..., r) and ``lora_b`` (out, r).

    One ``addmm``, accumulating into ``result`` in place, unless autograd forbids it or
    would pay for it: a view (in-place on a view makes autograd copy gradients back) or
    a leaf. Callers pass 2-D results straight from the base layer where they can. A base
    in another dtype (bf16 with fp32 adapters) gets the sum in the adapter's dtype,
    rounded once.
    """
    alpha: float = 1.0
    if isinstance(scaling, Tensor):  # a tensor scale (hotswap-ready) must not become a guard constant
        hidden = hidden * scaling
    else:
        alpha = scaling
    hidden_2d = hidden.reshape(-1, hidden.shape[-1])
    flat = result if result.dim() == 2 else result.reshape(-1, result.shape[-1])
    if result.dtype != lora_b.dtype:
        summed = flat.to(lora_b.dtype).addmm_(hidden_2d, lora_b.t(), alpha=alpha)
        return summed.to(result.dtype).view(result.shape)
    # Under torch.compile the graph is functionalised anyway; asking _is_view() would break it.
    if records_grad(flat, hidden_2d, lora_b) and (compiling() or flat._is_view() or flat.is_leaf):
        return flat.addmm(hidden_2d, lora_b.t(), alpha=alpha).view(result.shape)
    return flat.addmm_(hidden_2d, lora_b.t(), alpha=alpha).view(result.shape)
