"""``trainable_token_indices``: train a few rows of an embedding (new tokens) beside a LoRA adapter.

The rows ``indices`` of the embedding matrix ``E`` are replaced by a trained table ``T``
(``len(indices) x dim``, starting as a copy of those rows): ``E' = E`` with ``E'[indices] =
T``. A list of indices targets the model's input embedding; a dict names the layers. When
the output head shares the embedding's weight (tied embeddings), the head's logits of
those tokens use ``T`` too (``TiedTokens``, reading the embedding layer's tables; nothing
saved for it). Saved as Hugging Face PEFT saves it: ``<embedding>.token_adapter.trainable_tokens_delta``.

Merging writes ``T`` into the rows and keeps the original rows as the undo state (exact
unmerge). On tied weights the engine refuses merging, as for every layer on a weight other
modules share (Hugging Face PEFT merges there); train, save and load work unmerged. Active
adapters with tokens on one layer must not overlap in their indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import AdapterLayer, Capabilities, ConfigError, Merge, PeftConfig, PeftError

TOKEN_CAPABILITIES = Capabilities(mergeable=True)
DELTA_KEY = "token_adapter.trainable_tokens_delta"


class TrainableTokens(AdapterLayer):
    """Rows ``indices`` of an ``nn.Embedding`` (or a head ``nn.Linear``'s output rows) replaced by a trained table."""

    adapter_attribute_names = ("trainable_tokens_delta",)
    capabilities = TOKEN_CAPABILITIES

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.trainable_tokens_delta = nn.ParameterDict()
        self.token_indices: dict[str, list[int]] = {}

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        indices = list(getattr(config, "trainable_token_indices", None) or [])
        weight = self.base_layer.get_parameter("weight")
        bad = [i for i in indices if not 0 <= i < weight.shape[0]]
        if not indices or bad:
            raise ConfigError(
                f"trainable_token_indices {bad or indices} do not fit this layer's {weight.shape[0]} tokens; "
                "give indices in [0, vocabulary size)"
            )
        self.token_indices[adapter_name] = indices
        rows = weight.detach()[torch.tensor(indices, device=weight.device)]
        self.trainable_tokens_delta[adapter_name] = nn.Parameter(rows.clone())  # starts as the rows themselves

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self.token_indices.pop(adapter_name, None)

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        if adapter_name not in self.trainable_tokens_delta:
            return {}
        return {DELTA_KEY: self.trainable_tokens_delta[adapter_name]}

    def tables(self, adapter_names: Sequence[str]) -> list[tuple[Tensor, Tensor]]:
        """``(index, table)`` of the given adapters present here; overlapping indices are refused."""
        present = [n for n in adapter_names if n in self.trainable_tokens_delta]
        seen: set[int] = set()
        for name in present:
            overlap = seen & set(self.token_indices[name])
            if overlap:
                raise PeftError(
                    f"adapters {present} replace the same token rows {sorted(overlap)[:5]} of this layer at once; "
                    "activate one of them (set_adapter)"
                )
            seen.update(self.token_indices[name])
        device = self.base_layer.get_parameter("weight").device
        return [(torch.tensor(self.token_indices[n], device=device), self.trainable_tokens_delta[n]) for n in present]

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if not self.use_adapters:
            return result
        tables = self.tables(self.active_adapters)
        if isinstance(self.base_layer, nn.Embedding):
            return self._replace_rows(x, result, tables)
        return _replace_columns(self.base_layer, x, result, tables)

    def _replace_rows(self, ids: Tensor, looked_up: Tensor, tables: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Tokens in a table read their trained row (times the embedding's own scale, if it has one)."""
        vocabulary = self.base_layer.get_parameter("weight").shape[0]
        scale = getattr(self.base_layer, "embed_scale", None)
        for index, table in tables:
            slot = torch.full((vocabulary,), -1, dtype=torch.long, device=ids.device)
            slot[index] = torch.arange(index.numel(), device=ids.device)
            position = slot[ids]
            rows = F.embedding(position.clamp(min=0), table)
            if scale is not None:
                rows = rows * (scale.to(rows.dtype) if isinstance(scale, Tensor) else scale)
            looked_up = torch.where((position >= 0).unsqueeze(-1), rows.to(looked_up.dtype), looked_up)
        return looked_up

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        weight = self.base_layer.get_parameter("weight")
        tables = self.tables(adapter_names)
        originals = [(index, weight.detach()[index].clone()) for index, _ in tables]
        merged = weight.detach()
        for index, table in tables:
            merged = merged.index_copy(0, index, table.detach().to(weight.dtype))
        return Merge({"weight": merged}, state=originals)

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        if state is None:
            raise PeftError("trainable tokens cannot be unmerged without the rows they replaced")
        restored = self.base_layer.get_parameter("weight").detach()
        for index, rows in reversed(state):
            restored = restored.index_copy(0, index, rows)
        return {"weight": restored}


class TiedTokens(AdapterLayer):
    """An output head that shares the embedding's weight: the logits of the trained tokens use its tables.

    Reads the tables of ``source`` (the embedding's ``TrainableTokens``); saves nothing of its own.
    """

    adapter_attribute_names = ()
    capabilities = TOKEN_CAPABILITIES

    def __init__(self, base_layer: nn.Module, source: TrainableTokens) -> None:
        super().__init__(base_layer)
        self._source = [source]  # a list: not a submodule (its tables are saved once, by the embedding)

    @property
    def source(self) -> TrainableTokens:
        return self._source[0]

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        if adapter_name not in self.source.trainable_tokens_delta:
            raise ConfigError(f"the embedding tied to this head has no trainable tokens for {adapter_name!r}")

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if not self.use_adapters:
            return result
        return _replace_columns(self.base_layer, x, result, self.source.tables(self.active_adapters))

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge({})  # the weight is the embedding's: its layer writes the rows (the engine refuses tied merges)

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return {}


def _replace_columns(head: nn.Module, x: Tensor, logits: Tensor, tables: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Logits of the trained tokens from their tables: ``x T^T`` (+ the head's bias) in place of ``x E[indices]^T``."""
    bias = getattr(head, "bias", None)
    for index, table in tables:
        columns = F.linear(x.to(table.dtype), table, bias[index].to(table.dtype) if isinstance(bias, Tensor) else None)
        logits = logits.index_copy(-1, index, columns.to(logits.dtype))
    return logits
