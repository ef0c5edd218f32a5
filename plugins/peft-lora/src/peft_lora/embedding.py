"""LoRA on ``nn.Embedding``: a low-rank table added to the base table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_lora.config import LoraConfig
from peft_lora.layer import LoraLayer


class Embedding(LoraLayer):
    """``E' = E + scaling * (B A).T``; A is (r, num_embeddings), B is (embedding_dim, r).

    A starts at zero and B normal, so the model starts as the base model.
    """

    adapter_attribute_names = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        self._set_hyperparameters(adapter_name, config)
        weight = self._weight()
        num_embeddings, dim = weight.shape
        lora_a = torch.randn(config.r, num_embeddings, device=weight.device)
        lora_b = torch.randn(dim, config.r, device=weight.device)
        if config.init_lora_weights is not False:
            lora_a.zero_()
        self.lora_embedding_A[adapter_name] = nn.Parameter(lora_a)
        self.lora_embedding_B[adapter_name] = nn.Parameter(lora_b)

    def delta_weight(self, adapter_name: str) -> Tensor:
        a = self.lora_embedding_A[adapter_name].float()
        b = self.lora_embedding_B[adapter_name].float()
        delta: Tensor = (b @ a).T * self.scaling[adapter_name]
        return delta

    def _lookup(self, x: Tensor, table: Tensor) -> Tensor:
        base = self.base_layer
        assert isinstance(base, nn.Embedding)
        looked_up: Tensor = F.embedding(
            x, table, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse
        )
        return looked_up

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, result)
        if not self.use_adapters:
            return result
        for name in self.active_adapters:
            after_a = self._lookup(x, self.lora_embedding_A[name].T)
            delta = (after_a @ self.lora_embedding_B[name].T) * self.scaling[name]
            result = result + delta.to(result.dtype)
        return result

    def _forward_rows(self, x: Tensor, result: Tensor) -> Tensor:
        assert self.row_routing is not None
        names = list(self.lora_embedding_A.keys())
        index = self.row_routing.layer_index(names, x.device)
        stack_a, stack_b = self._stacked(
            names, [self.lora_embedding_A[n] for n in names], [self.lora_embedding_B[n] for n in names]
        )
        tokens = x.reshape(x.shape[0], -1)
        # Row b, token t reads column x[b, t] of its own adapter's A: (batch, tokens, r_max).
        hidden = stack_a.transpose(1, 2)[index[:, None], tokens]
        delta = torch.bmm(hidden, stack_b[index].transpose(1, 2))
        return result + delta.reshape(result.shape).to(result.dtype)
