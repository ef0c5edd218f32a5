"""The LoHa layer: ``delta W = (A1 B1) * (A2 B2) * alpha / r`` on nn.Linear, nn.Conv1d, nn.Conv2d.

Tensors and shapes are Hugging Face PEFT's: ``hada_w1_a``/``hada_w2_a`` (out, r) and
``hada_w1_b``/``hada_w2_b`` (r, in * kernel); with ``use_effective_conv2d`` on a kernel > 1,
``hada_t1``/``hada_t2`` (r, r, *kernel) (Conv1d: (r, r, k, 1)), ``hada_w*_a`` (r, out) and
``hada_w*_b`` (r, in), the kernel being ``einsum(t, w_b, w_a)``.

Factored product: a Hadamard product of two rank-r products is a rank-r² product,
``(A1 B1) * (A2 B2) = Ã B̃`` with ``Ã[o, (i, j)] = A1[o, i] A2[o, j]`` and ``B̃[(i, j), q] =
B1[i, q] B2[j, q]``. ``x B̃ᵀ Ãᵀ`` costs ``r² (in + out)`` per token instead of building the
(out, in) ``delta W``: cheaper while ``r²`` is below about ``in * out / (in + out)`` (r <= 15
for 512 x 512). The layer measures both costs per call (``LycorisLayer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import ParameterDict

from peft_core.contract import Capabilities
from peft_loha.config import LoHaConfig
from peft_lycoris import LycorisConfig, LycorisLayer, kaiming_


class LoHaLayer(LycorisLayer):
    """LoHa adapters on one nn.Linear, nn.Conv1d or nn.Conv2d."""

    adapter_attribute_names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)
    rank_dims: ClassVar[Mapping[str, int]] = {"hada_w1_a": 1, "hada_w1_b": 0, "hada_w2_a": 1, "hada_w2_b": 0}

    def __init__(self, base_layer: torch.nn.Module) -> None:
        super().__init__(base_layer)
        self.hada_w1_a, self.hada_w1_b, self.hada_t1 = ParameterDict(), ParameterDict(), ParameterDict()
        self.hada_w2_a, self.hada_w2_b, self.hada_t2 = ParameterDict(), ParameterDict(), ParameterDict()

    def create_parameters(self, adapter_name: str, config: LycorisConfig, init: bool) -> None:
        assert isinstance(config, LoHaConfig)
        r, out, new = config.r, self.out_features, self.new_parameter
        if config.use_effective_conv2d and self.is_conv and max(self.kernel) > 1:
            kernel = self.kernel if len(self.kernel) == 2 else (*self.kernel, 1)
            channels = self.fan_in // self.kernel_numel()
            self.hada_t1[adapter_name], self.hada_t2[adapter_name] = new(r, r, *kernel), new(r, r, *kernel)
            self.hada_w1_a[adapter_name], self.hada_w2_a[adapter_name] = new(r, out), new(r, out)
            self.hada_w1_b[adapter_name], self.hada_w2_b[adapter_name] = new(r, channels), new(r, channels)
        else:
            self.hada_w1_a[adapter_name], self.hada_w2_a[adapter_name] = new(out, r), new(out, r)
            self.hada_w1_b[adapter_name], self.hada_w2_b[adapter_name] = new(r, self.fan_in), new(r, self.fan_in)
        if init:
            kaiming_(*(p for p in self.adapter_parameters(adapter_name) if p is not self.hada_w2_b[adapter_name]))
            if config.init_weights:  # one zero factor: delta W = 0, the model starts as the base model
                torch.nn.init.zeros_(self.hada_w2_b[adapter_name])
            else:
                kaiming_(self.hada_w2_b[adapter_name])

    def kernel_numel(self) -> int:
        return int(torch.Size(self.kernel).numel())

    def pairs(self, adapter_name: str) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``((A1, B1), (A2, B2))``, each A (out, r) and B (r, in * kernel): delta W = (A1 B1) * (A2 B2) * s."""
        found = []
        factors = ((self.hada_w1_a, self.hada_w1_b, self.hada_t1), (self.hada_w2_a, self.hada_w2_b, self.hada_t2))
        for w_a, w_b, t in factors:
            a, b = w_a[adapter_name], w_b[adapter_name]
            if adapter_name in t:  # kernel[o, q, k, l] = sum_ij t[i, j, k, l] b[j, q] a[i, o]
                found.append((a.T, torch.einsum("ijkl,jq->iqkl", t[adapter_name], b).reshape(b.shape[0], -1)))
            else:
                found.append((a, b))
        return found[0], found[1]

    def delta_weight(self, adapter_name: str) -> Tensor:
        (a1, b1), (a2, b2) = self.pairs(adapter_name)
        delta = (a1 @ b1) * (a2 @ b2) * self.config(adapter_name).scaling()
        return delta.reshape(self.weight().shape)

    def build_cost(self, adapter_name: str) -> float:
        return 2.0 * self.config(adapter_name).r * self.out_features * self.fan_in

    def factored_cost(self, adapter_name: str) -> float | None:
        if self.is_conv and self.base_layer.groups != 1:
            return None  # a grouped kernel is not one (out, in * kernel) product
        return float(self.config(adapter_name).r ** 2 * (self.fan_in + self.out_features))

    def factored(self, adapter_name: str, x: Tensor) -> Tensor | None:
        if self.factored_cost(adapter_name) is None:
            return None
        (a1, b1), (a2, b2) = self.pairs(adapter_name)
        rank2 = a1.shape[1] * a2.shape[1]
        a = (a1.unsqueeze(2) * a2.unsqueeze(1)).reshape(-1, rank2) * self.config(adapter_name).scaling()
        b = (b1.unsqueeze(1) * b2.unsqueeze(0)).reshape(rank2, -1)
        hidden = self.with_weight(x.to(a.dtype), b.view(rank2, *self.weight().shape[1:]), bias=False)
        if not self.is_conv:
            return hidden @ a.T
        return (a @ hidden.flatten(2)).view(hidden.shape[0], -1, *hidden.shape[2:])  # 1x1 product over channels
