"""LoRA on ``nn.Embedding``: a low-rank table added to the base table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import weights_will_be_loaded
from peft_lora.config import LoraConfig
from peft_lora.initialisation import embedding_factors, factor_device, round_like_base
from peft_lora.layer import LORA_CAPABILITIES, LoraLayer
from peft_lora.ops import add_low_rank
from peft_lora.rows import rows_delta


class Embedding(LoraLayer):
    """``E' = E + scaling * (B A).T``; A is (r, num_embeddings), B is (embedding_dim, r).

    A starts at zero and B normal, so the model starts as the base model (every
    ``init_lora_weights`` but False: an embedding has no PiSSA/OLoRA/orthogonal init, as in
    Hugging Face PEFT).
    """

    adapter_attribute_names = ("lora_embedding_A", "lora_embedding_B")
    capabilities = LORA_CAPABILITIES

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        self._set_hyperparameters(adapter_name, config)
        weight = self._weight()
        num_embeddings, dim = weight.shape
        if weights_will_be_loaded():
            lora_a = torch.empty(config.r, num_embeddings, device=weight.device)
            lora_b = torch.empty(dim, config.r, device=weight.device)
        else:
            device = factor_device(weight.device)
            lora_a, lora_b = embedding_factors(config.r, num_embeddings, dim, config.init_lora_weights, device)
            round_like_base((lora_a, lora_b), weight.dtype)
        self.lora_embedding_A[adapter_name] = nn.Parameter(lora_a)
        self.lora_embedding_B[adapter_name] = nn.Parameter(lora_b)

    def delta_rows(self, adapter_name: str, start: int, stop: int) -> Tensor:
        a = self.lora_embedding_A[adapter_name].float()
        b = self.lora_embedding_B[adapter_name].float()
        delta: Tensor = (b @ a[:, start:stop]).mul_(self.scaling[adapter_name]).T
        return delta

    def _lookup(self, x: Tensor, table: Tensor) -> Tensor:
        base = self.base_layer
        assert isinstance(base, nn.Embedding)
        looked_up: Tensor = F.embedding(
            x, table, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse
        )
        return looked_up

    factor_keys = ("lora_embedding_A", "lora_embedding_B")

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        return self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]

    def factor_owners(self, adapter_name: str) -> tuple[tuple[nn.Module, str], tuple[nn.Module, str]]:
        return (self.lora_embedding_A, adapter_name), (self.lora_embedding_B, adapter_name)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, result)
        if not self.use_adapters:
            return result
        for name in self.active_adapters:
            lora_a, lora_b = self.lora_factors(name)
            result = add_low_rank(result, self._lookup(x, lora_a.T), lora_b, self.scaling[name])
        return result

    def _forward_rows(self, x: Tensor, result: Tensor) -> Tensor:
        routing = self.row_routing
        assert routing is not None
        names = tuple(self.adapter_configs)
        routing.check_rows(x.shape[0])
        stack = self.row_stack(names, routing.layer_used(names))
        # Row b, token t reads row x[b, t] of its own adapter's A^T: one lookup in the stacked tables.
        offsets = routing.layer_index(names, x.device) * stack.a.shape[1]
        ids = x.reshape(x.shape[0], -1) + offsets[:, None]
        hidden = F.embedding(ids, stack.a.reshape(-1, stack.a.shape[2]))
        return rows_delta(result, routing, names, stack, hidden=hidden)
