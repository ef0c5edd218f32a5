"""LoRA, DoRA and IA3 layers on bitsandbytes ``Linear4bit``/``Linear8bitLt``: the plugins' own
layers with ``QuantizedWeight`` first, so the forward runs the quantized kernel as it is.

Each class states its capabilities: LoRA keeps per-row batches, hotswap and weighted
combination (they touch only the adapter's factors), DoRA per-row batches and hotswap,
IA3 per-row batches and hotswap; none merges (``QuantizedWeight`` says why).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from peft_bnb.quantized import QuantizedWeight
from peft_core.contract import Capabilities
from peft_dora import DoraLinear
from peft_dora.linear import bias_of
from peft_ia3.layer import IA3Layer
from peft_lora import Linear


class QuantizedLoraLinear(QuantizedWeight, Linear):
    """LoRA on a quantized linear layer: ``y = Q(x) + s B A x`` with ``Q`` the bitsandbytes layer."""

    capabilities = Capabilities(per_row=True, hotswap=True, weighted=True)


class QuantizedDoraLinear(QuantizedWeight, DoraLinear):
    """DoRA on a quantized linear layer: the norm of the dequantized weight, the product of the kernel."""

    capabilities = Capabilities(per_row=True, hotswap=True)
    folds_into_weight = False  # the kernel's product is not the dequantized weight's (8-bit, CPU layouts)

    def without_bias(self, flat_x: Tensor) -> Tensor:
        result: Tensor = self.base_layer(flat_x)
        bias = bias_of(self.base_layer)
        return result if bias is None else result - bias.to(result.dtype)

    def dense_product(self, flat_x: Tensor) -> Tensor:
        # As Hugging Face PEFT with dropout: the dequantized weight's product.
        return F.linear(flat_x, self.dense_weight().to(flat_x.dtype))


class QuantizedIA3Linear(QuantizedWeight, IA3Layer):
    """IA3 on a quantized linear layer: the vector scales its input or output around the kernel."""

    capabilities = Capabilities(per_row=True, hotswap=True)
