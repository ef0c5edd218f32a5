"""DoRA on ``nn.Embedding``: the magnitude is per embedding dimension (a column of the table)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from peft_core.contract import records_grad
from peft_dora.dora import DoraLayer
from peft_dora.linear import DORA_CAPABILITIES
from peft_lora import Embedding
from peft_lora.ops import add_low_rank


class DoraEmbedding(DoraLayer, Embedding):
    """``y = f * (E[x] + s (A^T[x]) B^T)`` with ``f = m / ||E^T + s B A||`` per embedding dimension.

    As in Hugging Face PEFT, the norm runs over the vocabulary for each of the
    ``embedding_dim`` columns of the table; ``lora_dropout`` does not apply to lookups.
    """

    adapter_attribute_names = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")  # type: ignore[assignment]  # LoRA\'s plus the magnitude
    capabilities = DORA_CAPABILITIES

    def weight_rows(self, weight: Tensor) -> Tensor:
        return weight.T  # (embedding_dim, num_embeddings)

    def magnitude_shape(self) -> tuple[int, ...]:
        return (self._weight().shape[1],)

    def along_rows(self, factor: Tensor) -> Tensor:
        return factor.view(1, -1)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            return self.scale_rows(Embedding._forward_rows(self, x, result), channel_dim=-1)
        if not self.use_adapters:
            return result
        out_dtype = result.dtype
        for name in self.active_adapters:
            lora_a, lora_b = self.lora_factors(name)
            factor = self.dora_factor(name).to(lora_b.dtype)
            result = add_low_rank(result.to(lora_b.dtype), self._lookup(x, lora_a.T), lora_b, self.scaling[name])
            result = result * factor if records_grad(result, factor) else result.mul_(factor)
        return result.to(out_dtype)
