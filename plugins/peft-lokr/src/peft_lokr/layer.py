"""The LoKr layer: ``delta W = kron(w1, w2) * alpha / r`` on nn.Linear, nn.Conv1d, nn.Conv2d.

Tensors and shapes are Hugging Face PEFT's, with out = a * b and in (per group) = c * d:
``lokr_w1`` (a, c) or ``lokr_w1_a`` (a, r) @ ``lokr_w1_b`` (r, c); ``lokr_w2`` (b, d, *kernel)
or ``lokr_w2_a`` (b, r) @ ``lokr_w2_b`` (r, d * kernel), or with ``use_effective_conv2d``
``lokr_t2`` (r, r, *kernel) (Conv1d: (r, r, k, 1)), ``lokr_w2_a`` (r, b), ``lokr_w2_b`` (r, d).

Factored product: ``kron(w1, w2)`` maps input channel ``p * d + q`` to output ``i * b + j``
with weight ``w1[i, p] w2[j, q]``, so ``x`` viewed as (c, d) per token gives
``y = w1 X w2ᵀ``: ``c b (d + a)`` (or ``a d (c + b)``, the other order) multiply-adds per
token instead of ``a b c d``, and a convolution is ``w2``'s kernel over ``c`` groups of
``d`` channels, mixed by ``w1``. Always cheaper for regular shapes; the one exception is a
Conv1d with a full ``lokr_w2``, whose update Hugging Face PEFT builds with a kron of a 2-D
and a 3-D tensor (not a per-channel Kronecker product): it is built in full, as there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import ParameterDict

from peft_core.contract import Capabilities
from peft_lokr.config import LoKrConfig, factorization
from peft_lycoris import LycorisConfig, LycorisLayer, kaiming_


class LoKrLayer(LycorisLayer):
    """LoKr adapters on one nn.Linear, nn.Conv1d or nn.Conv2d."""

    adapter_attribute_names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)
    rank_dims: ClassVar[Mapping[str, int]] = {"lokr_w1_a": 1, "lokr_w1_b": 0, "lokr_w2_a": 1, "lokr_w2_b": 0}

    def __init__(self, base_layer: torch.nn.Module) -> None:
        super().__init__(base_layer)
        self.lokr_w1, self.lokr_w1_a, self.lokr_w1_b = ParameterDict(), ParameterDict(), ParameterDict()
        self.lokr_w2, self.lokr_w2_a, self.lokr_w2_b = ParameterDict(), ParameterDict(), ParameterDict()
        self.lokr_t2 = ParameterDict()
        self.kernel_numel = int(torch.Size(self.kernel).numel())

    def create_parameters(self, adapter_name: str, config: LycorisConfig, init: bool) -> None:
        assert isinstance(config, LoKrConfig)
        r, new, kernel = config.r, self.new_parameter, self.kernel
        a, b = factorization(self.out_features, config.decompose_factor)
        c, d = factorization(self.fan_in // self.kernel_numel, config.decompose_factor)
        if config.decompose_both and r < max(a, c) / 2:
            self.lokr_w1_a[adapter_name], self.lokr_w1_b[adapter_name] = new(a, r), new(r, c)
        else:
            self.lokr_w1[adapter_name] = new(a, c)
        if r >= max(b, d) / 2:
            self.lokr_w2[adapter_name] = new(b, d, *kernel)
        elif config.use_effective_conv2d and self.is_conv and max(kernel) > 1:
            self.lokr_t2[adapter_name] = new(r, r, *kernel, *(() if len(kernel) == 2 else (1,)))
            self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name] = new(r, b), new(r, d)
        else:
            self.lokr_w2_a[adapter_name], self.lokr_w2_b[adapter_name] = new(b, r), new(r, d * self.kernel_numel)
        if not init:
            return
        kaiming_(*self.adapter_parameters(adapter_name))
        if config.init_weights is True:  # w1 (or its first factor) zero: delta W = 0
            torch.nn.init.zeros_(self._first(adapter_name, self.lokr_w1, self.lokr_w1_a))
        elif config.init_weights == "lycoris":  # w2 (or its second factor) zero instead
            torch.nn.init.zeros_(self._first(adapter_name, self.lokr_w2, self.lokr_w2_b))

    @staticmethod
    def _first(adapter_name: str, *containers: ParameterDict) -> Tensor:
        found: Tensor = next(c[adapter_name] for c in containers if adapter_name in c)
        return found

    def w1(self, adapter_name: str) -> Tensor:
        """(a, c)."""
        if adapter_name in self.lokr_w1:
            return self._first(adapter_name, self.lokr_w1)
        return self._first(adapter_name, self.lokr_w1_a) @ self._first(adapter_name, self.lokr_w1_b)

    def w2(self, adapter_name: str) -> Tensor:
        """As Hugging Face PEFT forms it: (b, d), (b, d * kernel), (b, d, *kernel) or CP (b, d, k, l)."""
        if adapter_name in self.lokr_w2:
            return self._first(adapter_name, self.lokr_w2)
        a, b = self._first(adapter_name, self.lokr_w2_a), self._first(adapter_name, self.lokr_w2_b)
        if adapter_name in self.lokr_t2:  # kernel[p, q, k, l] = sum_ij t[i, j, k, l] a[i, p] b[j, q]
            return torch.einsum("ijkl,ip,jr->prkl", self._first(adapter_name, self.lokr_t2), a, b)
        return a @ b

    def delta_weight(self, adapter_name: str) -> Tensor:
        w1, w2 = self.w1(adapter_name), self.w2(adapter_name)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        # A fresh copy: the CP kernel of a Conv1d has a size-1 dim with an odd stride, which
        # torch.kron cannot view (Hugging Face PEFT's forward fails on it).
        delta = torch.kron(w1, w2.clone(memory_format=torch.contiguous_format)) * self.config(adapter_name).scaling()
        return delta.reshape(self.weight().shape)

    def build_cost(self, adapter_name: str) -> float:
        return float(self.out_features * self.fan_in)

    def _shapes(self, adapter_name: str) -> tuple[int, int, int, int] | None:
        """(a, c, b, d) where the factored product applies; None for grouped convs and a 3-D ``lokr_w2``."""
        full = self.lokr_w2.get(adapter_name)
        if (self.is_conv and self.base_layer.groups != 1) or (full is not None and full.dim() == 3):
            return None
        if adapter_name in self.lokr_w1:
            a, c = self.lokr_w1[adapter_name].shape
        else:
            a, c = self.lokr_w1_a[adapter_name].shape[0], self.lokr_w1_b[adapter_name].shape[1]
        return a, c, self.out_features // a, self.fan_in // self.kernel_numel // c

    def _costs(self, a: int, c: int, b: int, d: int) -> tuple[int, int]:
        """Multiply-adds per position: w2 first (``c b (d k + a)``), w1 first (``a d (c + b k)``)."""
        k = self.kernel_numel
        return c * b * (d * k + a), a * d * (c + b * k)

    def factored_cost(self, adapter_name: str) -> float | None:
        shapes = self._shapes(adapter_name)
        return None if shapes is None else float(min(self._costs(*shapes)))

    def factored(self, adapter_name: str, x: Tensor) -> Tensor | None:
        shapes = self._shapes(adapter_name)
        if shapes is None:
            return None
        a, c, b, d = shapes
        w2_first = self._costs(*shapes)[0] <= self._costs(*shapes)[1]
        w1 = self.w1(adapter_name) * self.config(adapter_name).scaling()
        w2 = self.w2(adapter_name).reshape(b, d, *self.kernel)
        x = x.to(w1.dtype)
        if not self.is_conv:  # per token: Y (a, b) = w1 X (c, d) w2ᵀ
            rows = x.reshape(-1, c, d)
            y = torch.matmul(w1, rows @ w2.T) if w2_first else torch.matmul(w1, rows) @ w2.T
            return y.reshape(*x.shape[:-1], a * b)
        n, spatial = x.shape[0], x.shape[2:]
        if w2_first:  # w2's kernel over c groups of d channels, then w1 mixes the groups
            z = self.with_weight(x.reshape(n * c, d, *spatial), w2, bias=False)
            out_spatial = z.shape[2:]
            y = torch.matmul(w1, z.reshape(n, c, -1))
        else:
            mixed = torch.matmul(w1, x.reshape(n, c, -1)).reshape(n * a, d, *spatial)
            y = self.with_weight(mixed, w2, bias=False)
            out_spatial = y.shape[2:]
        return y.reshape(n, a * b, *out_spatial)
