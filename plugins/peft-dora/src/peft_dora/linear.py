"""DoRA on ``nn.Linear`` and transformers ``Conv1D`` (weight stored (in, out): ``fan_in_fan_out``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import Capabilities, compiling, records_grad
from peft_dora.dora import DoraLayer
from peft_dora.fold import FoldedDora, worth_folding
from peft_lora import Linear
from peft_lora.ops import add_low_rank

#: Merges are exact (bit for bit undone), per-row batches scale each row by its own
#: adapter's factor, a hotswap replaces factors and magnitude. Not ``weighted``: a
#: weighted sum of DoRA adapters is not a DoRA adapter of the same form.
DORA_CAPABILITIES = Capabilities(mergeable=True, per_row=True, hotswap=True)


def bias_of(module: nn.Module) -> Tensor | None:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, Tensor) else None


class DoraLinear(DoraLayer, Linear):
    """``y = f * (W x + s B A x) + bias`` with ``f = m / ||W + s B A||`` per output feature.

    The base product is computed here without its bias (the bias is not scaled), with
    the adapter's ``B A x`` accumulated into it in place and the factor and bias applied
    in one pass: in training one output-sized pass over LoRA's, where Hugging Face PEFT
    spends five, plus the norm it recomputes with an ``in x in`` identity product.
    """

    adapter_attribute_names = ("lora_A", "lora_B", "lora_magnitude_vector")  # type: ignore[assignment]  # LoRA\'s plus the magnitude
    capabilities = DORA_CAPABILITIES

    def weight_rows(self, weight: Tensor) -> Tensor:
        return weight.T if self.fan_in_fan_out else weight

    def magnitude_shape(self) -> tuple[int, ...]:
        return (self.out_features,)

    def along_rows(self, factor: Tensor) -> Tensor:
        return factor.view(1, -1) if self.fan_in_fan_out else factor.view(-1, 1)

    def without_bias(self, flat_x: Tensor) -> Tensor:
        """``W x`` for 2-D ``flat_x`` (tokens, in): the base layer's product without its bias."""
        weight = self._weight()
        return flat_x @ weight if self.fan_in_fan_out else F.linear(flat_x, weight)

    def dense_product(self, flat_x: Tensor) -> Tensor:
        """``W x`` with the float weight (``dense_weight``): the product the dropout path uses."""
        return self.without_bias(flat_x)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x)
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        flat_x = x.reshape(-1, x.shape[-1])
        if self._folds(flat_x):
            return self._folded(flat_x).view(*x.shape[:-1], self.out_features)
        result = self.without_bias(flat_x)
        out_dtype = result.dtype
        bias = bias_of(self.base_layer)
        names = self.active_adapters
        for position, name in enumerate(names):
            result = self._add_adapter(result, flat_x, name, bias if position == len(names) - 1 else None)
        return result.to(out_dtype).view(*x.shape[:-1], result.shape[-1])

    #: Whether ``_folded`` may replace the base layer's product (not for quantized bases, whose
    #: kernel computes something else than the dequantized weight's product).
    folds_into_weight: ClassVar[bool] = True

    def _folds(self, flat_x: Tensor) -> bool:
        """Whether this call takes the folded path (``peft_dora.fold``): training (the norm is
        computed every call then; inference reuses a cached one), one active adapter, float
        weights of one dtype, no dropout at work, enough tokens; measured on the CPU, where
        also the check that no magnitude is zero (the backward divides by it) costs nothing."""
        if not self.folds_into_weight or len(self.active_adapters) != 1 or flat_x.device.type != "cpu" or compiling():
            return False
        name = self.active_adapters[0]
        weight, (lora_a, lora_b) = self._weight(), self.lora_factors(name)
        magnitude = self.lora_magnitude_vector[name]
        return (
            records_grad(lora_a, lora_b, magnitude)
            and isinstance(self.scaling[name], float)
            and (not self.training or isinstance(self.lora_dropout[name], nn.Identity))
            and flat_x.dtype == weight.dtype == lora_a.dtype == magnitude.dtype
            and not weight.requires_grad
            and worth_folding(flat_x.shape[0], self.in_features, self.out_features)
            and bool((magnitude != 0).all())
        )

    def _folded(self, flat_x: Tensor) -> Tensor:
        name = self.active_adapters[0]
        lora_a, lora_b = self.lora_factors(name)
        magnitude = self.lora_magnitude_vector[name].reshape(-1)
        rows = self.weight_rows(self._weight())
        scaling = float(self.scaling[name])
        folded = FoldedDora.apply(flat_x, rows, lora_a, lora_b, magnitude, bias_of(self.base_layer), scaling)  # type: ignore[no-untyped-call]
        output: Tensor = folded[0]
        return output

    def _add_adapter(self, result: Tensor, flat_x: Tensor, name: str, bias: Tensor | None) -> Tensor:
        """``f * (result + s B A x)`` (``+ bias`` if given), ``result`` being the output so far without bias."""
        lora_a, lora_b = self.lora_factors(name)
        scaling = self.scaling[name]
        factor = self.dora_factor(name).to(lora_a.dtype)
        if result.dtype != lora_a.dtype:
            result = result.to(lora_a.dtype)
        dropout = self.lora_dropout[name]
        if self.training and not isinstance(dropout, nn.Identity):
            # As Hugging Face PEFT: the DoRA terms see the dropped input, the output so far is kept:
            # result + (f - 1) W x~ + f s B A x~.
            dropped = dropout(flat_x.to(lora_a.dtype))
            plain = self.dense_product(dropped.to(flat_x.dtype)).to(lora_a.dtype)
            adapted = torch.addmm(plain, F.linear(dropped, lora_a), lora_b.t(), alpha=float(scaling))
            result = torch.addcmul(result - plain, adapted, factor)
            return result if bias is None else result + bias.to(result.dtype)
        result = add_low_rank(result, F.linear(flat_x.to(lora_a.dtype), lora_a), lora_b, scaling)
        if bias is not None:
            return torch.addcmul(bias.to(result.dtype), result, factor)
        # The product is saved by autograd for the factor's gradient: scale a new tensor then.
        return result * factor if records_grad(result, factor) else result.mul_(factor)

    def _forward_rows(self, x: Tensor) -> Tensor:
        flat_x = x.reshape(-1, x.shape[-1])
        plain = self.without_bias(flat_x)
        result = self.scale_rows(self._rows(plain.view(*x.shape[:-1], plain.shape[-1]), x=x), channel_dim=-1)
        bias = bias_of(self.base_layer)
        return result if bias is None else result + bias.to(result.dtype)
