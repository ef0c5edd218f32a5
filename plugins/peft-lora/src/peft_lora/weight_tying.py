"""``ensure_weight_tying=True``: an output head tied to the input embedding takes the embedding's LoRA, tied too.

When the head shares the embedding's weight ``E`` (vocab, dim) and either is a LoRA target,
the embedding takes LoRA (``ΔE = (B_e A_e)^T``, A_e (r, vocab), B_e (dim, r)) and the head
reads the same factors transposed: ``A_h = B_e^T``, ``B_h = A_e^T``, so its update
``B_h A_h = A_e^T B_e^T`` is ``ΔE`` and the two stay one weight. One set of trained factors
(the head saves its transposed views under its own keys, as Hugging Face PEFT does). The
heads are wrapped last, after drawing the incumbent's constructor numbers for them.
Merging refused on the shared weight (as every tied merge here); ``modules_to_save``
copies of tied embeddings are not tied (refused with ``ensure_weight_tying``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import (
    AdapterLayer,
    Capabilities,
    ConfigError,
    Merge,
    PeftError,
    matches,
    plain_modules,
    weights_will_be_loaded,
)
from peft_lora.config import LoraConfig
from peft_lora.embedding import Embedding
from peft_lora.initialisation import default_draws, fast_init, incumbent_stream, init_factors
from peft_lora.layer import Linear
from peft_lora.parameter import selects


class TiedLoraLinear(Linear):
    """LoRA on a head tied to a LoRA ``Embedding``: its factors are the embedding's, transposed."""

    capabilities = Capabilities(mergeable=True)  # the embedding's merge writes the shared weight; refused when tied

    def __init__(self, base_layer: nn.Module, source: Embedding) -> None:
        super().__init__(base_layer)
        self._source = [source]  # a list: not a submodule (the factors belong to the embedding)

    @property
    def source(self) -> Embedding:
        return self._source[0]

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        if adapter_name not in self.source.lora_embedding_A:
            raise ConfigError(f"the embedding tied to this head has no LoRA adapter {adapter_name!r} to share")
        self._set_hyperparameters(adapter_name, config)
        if weights_will_be_loaded():
            return
        if incumbent_stream():  # the incumbent builds this head's own factors (drawing them) before tying them
            default_draws(torch.empty(config.r, self.in_features), torch.empty(self.out_features, config.r))
        if config.init_lora_weights is not False:
            # ...and then initialises the head's factors as a Linear's, through the tied views: the embedding's
            # B takes the head's A init (Kaiming-uniform or normal with std 1/r), its A the head's zero B.
            a, b = self.lora_factors(adapter_name)
            with torch.no_grad(), fast_init():  # the views only: the constructor draws are done
                init_factors(a, b, config.init_lora_weights, config.r)

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        embedding_a, embedding_b = self.source.lora_factors(adapter_name)
        return embedding_b.T, embedding_a.T

    def delta_rows(self, adapter_name: str, start: int, stop: int) -> Tensor:
        a, b = (t.float() for t in self.lora_factors(adapter_name))
        return (b[start:stop] @ a).mul_(self.scaling[adapter_name])

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        if adapter_name not in self.source.lora_embedding_A:
            return {}
        a, b = self.lora_factors(adapter_name)
        return {"lora_A.weight": a, "lora_B.weight": b}  # views of the embedding's: a load writes them once more

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge({})  # the weight is the embedding's: its layer writes it

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return {}

    def row_stack(self, names: tuple[str, ...], used: Sequence[int]) -> Any:
        raise PeftError("a tied head does not run per-row adapters")


def tied_heads(model: nn.Module, config: LoraConfig) -> tuple[list[str], dict[str, str]]:
    """Extra targets for ``ensure_weight_tying`` (the embedding if ``target_modules`` misses it, then the heads)
    and the heads' embedding paths. Nothing unless the input embedding's weight is shared with a head."""
    if not config.ensure_weight_tying:
        return [], {}
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    embedding_path = next((p for p, m in model.named_modules() if m is embedding and p), None)
    if embedding_path is None:
        warnings.warn(
            "ensure_weight_tying=True, but the model has no input embedding to tie to", UserWarning, stacklevel=3
        )
        return [], {}
    layer = model.get_submodule(embedding_path)
    weight = (layer.base_layer if isinstance(layer, AdapterLayer) else layer).get_parameter("weight")
    heads = modules_sharing(model, embedding_path, weight)
    if not heads:
        warnings.warn(
            "ensure_weight_tying=True, but no module shares the input embedding's weight", UserWarning, stacklevel=3
        )
        return [], {}
    saved = config.modules_to_save or []
    if any(matches(path, saved) for path in [embedding_path, *heads]):
        raise ConfigError(
            "ensure_weight_tying=True with tied embeddings in modules_to_save is not supported here (their copies "
            "would not stay tied); leave them out of modules_to_save, or set ensure_weight_tying=False"
        )
    chosen = [p for p in [embedding_path, *heads] if selects(config.target_modules, p, model.get_submodule(p))]
    if not chosen:
        warnings.warn(
            "ensure_weight_tying=True, but neither the input embedding nor a head tied to it is a target",
            UserWarning,
            stacklevel=3,
        )
        return [], {}
    extra = [] if embedding_path in chosen else [embedding_path]
    return extra + heads, {head: embedding_path for head in heads}


def modules_sharing(model: nn.Module, embedding_path: str, weight: Tensor) -> list[str]:
    """Modules other than the embedding whose weight is ``weight`` itself (not inside adapter layers)."""
    found: list[str] = []
    for path, module in plain_modules(model):
        own = module.base_layer if isinstance(module, AdapterLayer) else module
        if path != embedding_path and own._parameters.get("weight") is weight:
            found.append(path)
    return found
