"""Initial values of LoRA factors, drawn from the same random stream as Hugging Face PEFT's.

With a fixed seed a user switching from the incumbent gets the same initial adapter, and
so the same model after the same training. That fixes *which* random numbers are drawn,
in which order, on which device:

- the incumbent builds each factor as an ``nn.Linear``/``nn.ConvNd`` on torch's default
  device (the CPU), whose constructor draws PyTorch's default (Kaiming-uniform) init,
  and then initialises again: ``A`` is drawn twice and ``B`` once before it is zeroed
  (an Embedding's factors come from ``randn`` and ``B`` is drawn again);
- it then moves the factors to the base weight's device and dtype (an fp32 copy of a
  bf16 weight's adapter holds bf16-rounded values).

Those extra draws cost about twice the random numbers of drawing each factor once (see
benchmarks: ``inject_init_large``). ``fast_init()`` skips them: each factor is drawn
once, on the base weight's device, in fp32; the same distributions, other values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_FAST: ContextVar[bool] = ContextVar("peft_lora_fast_init", default=False)

#: Values of ``init_lora_weights`` that draw random factors (the others compute them from the base weight).
RANDOM_INITS = (True, False, "gaussian", "orthogonal")


@contextmanager
def fast_init() -> Iterator[None]:
    """Inside the block new LoRA factors are drawn once each, on the base weight's device.

    Faster injection (no discarded draws, no CPU round trip for accelerator models); the
    initial values then differ from Hugging Face PEFT's at the same seed (same
    distributions). Per thread/task, like any context variable.
    """
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def incumbent_stream() -> bool:
    """Whether new factors follow Hugging Face PEFT's random stream (the default)."""
    return not _FAST.get()


def factor_device(base_device: torch.device) -> torch.device:
    """Where new factors are drawn: torch's default device (as the incumbent), or the base's (``fast_init``)."""
    if incumbent_stream():
        return torch.empty(()).device  # torch.get_default_device() needs torch >= 2.3
    return base_device


def kaiming_uniform_(tensor: Tensor) -> Tensor:
    """PyTorch's default init of ``nn.Linear``/``nn.ConvNd`` weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
    bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
    return tensor.uniform_(-bound, bound)


def default_draws(*tensors: Tensor) -> None:
    """The draws of the incumbent's factor constructors, in order (kept only for ``init_lora_weights=False``)."""
    for tensor in tensors:
        kaiming_uniform_(tensor)


def init_factors(a: Tensor, b: Tensor, init: bool | str, r: int, b_bias: Tensor | None = None) -> None:
    """Fill ``A`` (r, ...) and ``B`` (out, r, ...) in place for a random ``init`` (not PiSSA/OLoRA).

    ``True``: A Kaiming-uniform, B zero. ``"gaussian"``: A normal with mean 0 and standard deviation 1/r, B zero.
    ``False``: both Kaiming-uniform (a non-trivial adapter). ``"orthogonal"``: see
    ``orthogonal_factors``. On the incumbent's stream the constructors' draws come first.
    ``b_bias`` (``lora_bias``): PyTorch's default bias init, U(-1/sqrt(r), 1/sqrt(r)),
    drawn after B's weight; zero unless ``init`` is False.
    """
    if incumbent_stream() or init is False:
        default_draws(a, b)
        if b_bias is not None:
            bound = 1 / math.sqrt(b[0].numel())
            b_bias.uniform_(-bound, bound)
    if init is False:
        return
    if b_bias is not None:
        b_bias.zero_()
    if init == "orthogonal":
        new_a, new_b = orthogonal_factors(a.shape[1], b.shape[0], r)
        a.copy_(new_a)
        b.copy_(new_b)
        return
    if init == "gaussian":
        a.normal_(std=1 / r)
    else:
        kaiming_uniform_(a)
    b.zero_()


def orthogonal_factors(in_features: int, out_features: int, r: int) -> tuple[Tensor, Tensor]:
    """A (r, in) and B (out, r) from the odd and even rows of one random orthogonal r x r matrix.

    ``Q = qr(N(0, 1)^{r x r})``; ``A = (N^{in x r/2} Q[0::2]).T / 10``,
    ``B = (N^{r/2 x out}).T Q[1::2] / 10``: the rows of A and the columns of B span
    orthogonal subspaces, so ``B A = 0`` at the start (r must be even). On torch's default device.
    """
    q, _ = torch.linalg.qr(torch.randn(r, r))
    a = torch.randn(in_features, r // 2).mm(q[0::2, :]).T / 10.0
    b = torch.randn(r // 2, out_features).T.mm(q[1::2, :]) / 10.0
    return a, b


def embedding_factors(
    r: int, num_embeddings: int, dim: int, init: bool | str, device: torch.device
) -> tuple[Tensor, Tensor]:
    """A (r, num_embeddings) and B (dim, r) of an Embedding's LoRA: A zero and B N(0, 1), or
    both N(0, 1) for ``init=False``. Every other init is the default here (as in the incumbent)."""
    a = torch.randn(r, num_embeddings, device=device)
    b = torch.randn(dim, r, device=device)
    if init is not False:
        a.zero_()
        if incumbent_stream():
            b.normal_()  # the incumbent draws B again
    return a, b


def round_like_base(tensors: tuple[Tensor, ...], base_dtype: torch.dtype) -> None:
    """Round new factors through the base weight's dtype in place, as the incumbent's move to it does.

    (It keeps fp32 copies of a half-precision base's adapter, holding the rounded values.)
    Nothing on ``fast_init`` or for fp32 bases.
    """
    if not incumbent_stream() or not base_dtype.is_floating_point:
        return
    with torch.no_grad():
        for tensor in tensors:
            if tensor.dtype != base_dtype:
                tensor.copy_(tensor.to(base_dtype))
