"""``DoraLayer``: what every DoRA layer adds to its LoRA layer (magnitude, norms, merges, swaps).

DoRA (Liu et al. 2024) splits the adapted weight into a direction and a learned
magnitude per output channel ("row")::

    W' = m * (W + s B A) / ||W + s B A||        (norm per row, treated as a constant)

so a layer computes ``y = f * (W x + s B A x) + bias`` with ``f = m / ||W + s B A||``.
The magnitude ``m`` (``lora_magnitude_vector``) starts at the base weight's row norms,
so a fresh adapter computes the base model. Several active adapters compose in order,
``f_2 * (f_1 * (W x + s_1 B_1 A_1 x) + s_2 B_2 A_2 x)``, each norm taken on the base
weight: what Hugging Face PEFT computes, forward and merged alike.

A concrete layer (``DoraLinear``, ``DoraEmbedding``, ``DoraConv``) says how its weight
is viewed as rows (``weight_rows``), the magnitude's saved shape and how a per-row
factor multiplies the stored weight (``along_rows``), and implements ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from peft_core.contract import ConfigError, Merge, MergeError, PeftConfig, PeftError, weights_will_be_loaded
from peft_dora.norms import NormCache, direct_row_norms, row_norms, squared_row_norms
from peft_lora import LoraConfig, LoraLayer

MAGNITUDE = "lora_magnitude_vector"


@dataclass(frozen=True)
class DoraMerge:
    """What undoing a DoRA merge needs: per adapter, the norm and the magnitude used (fp32, flat)."""

    norms: dict[str, Tensor]
    magnitudes: dict[str, Tensor]


class DoraLayer(LoraLayer):
    """LoRA layer plus a magnitude per adapter; subclasses combine it with a LoRA layer class."""

    variant_flags: ClassVar[frozenset[str]] = frozenset({"use_dora"})

    def __init__(self, base_layer: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(base_layer, *args, **kwargs)
        self.lora_magnitude_vector = nn.ParameterDict()
        self._norm_cache = NormCache()  # ||W + s B A|| per adapter
        self._base_cache = NormCache()  # ||W||^2 per row

    # --- what a layer type supplies ---

    def weight_rows(self, weight: Tensor) -> Tensor:
        """``weight`` viewed as (channels, K): one row per magnitude entry (a view, no copy)."""
        raise NotImplementedError

    def magnitude_shape(self) -> tuple[int, ...]:
        """Shape of ``lora_magnitude_vector`` as Hugging Face PEFT saves it for this layer type."""
        raise NotImplementedError

    def along_rows(self, factor: Tensor) -> Tensor:
        """A per-row ``factor`` (channels,) shaped to multiply the stored weight."""
        raise NotImplementedError

    def dense_weight(self) -> Tensor:
        """The base weight as a float tensor (a quantized layer dequantizes here)."""
        return self._weight()

    def weight_source(self) -> Tensor:
        """The stored base weight parameter: the norms are recomputed when it changes."""
        return self.base_layer.get_parameter("weight")

    # --- adapters ---

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        if not config.use_dora:
            raise ConfigError(
                f"adapter {adapter_name!r} does not set use_dora, but this module already holds DoRA adapters "
                f"({type(self).__name__}); give every adapter on these modules the same use_dora"
            )
        super().update_layer(adapter_name, config)
        lora_a, lora_b = self.lora_factors(adapter_name)
        if weights_will_be_loaded():  # the checkpoint holds the magnitude
            magnitude = torch.empty(self.magnitude_shape(), device=lora_a.device, dtype=lora_a.dtype)
        else:  # ||W + s B A||: the base weight's norms when B starts at zero
            rows = self.weight_rows(self.dense_weight())
            norms = direct_row_norms(rows, lora_a, lora_b, self.scaling[adapter_name])
            magnitude = norms.to(lora_a.dtype).reshape(self.magnitude_shape())
        self.lora_magnitude_vector[adapter_name] = nn.Parameter(magnitude)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._norm_cache.drop(adapter_name)

    # --- the norm and the factor ---

    def weight_norm(self, adapter_name: str) -> Tensor:
        """``||W + s B A||`` per row (channels,), fp32, no grad; cached while its inputs are unchanged."""
        lora_a, lora_b = self.lora_factors(adapter_name)
        scaling = self.scaling[adapter_name]
        source = self.weight_source()
        sources = (source, lora_a, lora_b, *([scaling] if isinstance(scaling, Tensor) else []))
        extra = () if isinstance(scaling, Tensor) else (scaling,)

        def compute() -> Tensor:
            dense = self.dense_weight()
            rows_squared = self._base_cache.get(
                "weight", (source,), (), lambda: squared_row_norms(self.weight_rows(dense))
            )
            return row_norms(self.weight_rows(dense), lora_a, lora_b, scaling, rows_squared)

        return self._norm_cache.get(adapter_name, sources, extra, compute)

    def dora_factor(self, adapter_name: str) -> Tensor:
        """``m / ||W + s B A||`` per row (channels,), in the magnitude's dtype; differentiable in ``m``."""
        magnitude: Tensor = self.lora_magnitude_vector[adapter_name]
        return magnitude.reshape(-1) / self.weight_norm(adapter_name).to(magnitude.dtype)

    def row_factors(self, names: Sequence[str], used: Sequence[int]) -> Tensor:
        """(len(names) + 1, channels) factors for per-row batches; slot 0 (no adapter) and unused are ones."""
        in_use = set(used)
        factors = [self.dora_factor(n) if i in in_use else None for i, n in enumerate(names)]
        template = next((f for f in factors if f is not None), None)
        if template is None:
            magnitude = self.lora_magnitude_vector[names[0]]
            template = magnitude.new_ones(magnitude.numel())
        ones = torch.ones_like(template)
        return torch.stack([ones, *(f if f is not None else ones for f in factors)])

    def scale_rows(self, result: Tensor, channel_dim: int) -> Tensor:
        """``result`` (batch, ...) times each row's factor along ``channel_dim`` (the per-row routing)."""
        routing = self.row_routing
        assert routing is not None
        names = tuple(self.adapter_configs)
        factors = self.row_factors(names, routing.layer_used(names))[routing.layer_index(names, result.device)]
        shape = [1] * result.dim()
        shape[0], shape[channel_dim] = result.shape[0], -1
        return (result.to(factors.dtype) * factors.view(shape)).to(result.dtype)

    # --- merging: W' = f * (W + dW), each norm on the unmerged weight ---

    def low_rank_delta(self, adapter_name: str) -> Tensor:
        """LoRA's ``s B A`` shaped like the stored weight (fp32)."""
        return LoraLayer.delta_weight(self, adapter_name)

    def delta_weight(self, adapter_name: str) -> Tensor:
        """The adapter's whole change of the weight, ``f * (W + s B A) - W`` (fp32): what merging it alone adds."""
        weight = self.dense_weight()
        merged = self._merge_into(weight.float(), [adapter_name], {}, {})
        return merged - weight.float()

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        if self.merged_adapters:
            raise MergeError(
                f"{type(self).__name__} already has {self.merged_adapters} merged; DoRA adapters are merged "
                "together in one call (each norm is taken on the unmerged weight): unmerge_adapter() first, "
                "then merge_adapter() with all of them"
            )
        if reversible:
            zero = [n for n in adapter_names if not bool((self.lora_magnitude_vector[n] != 0).all())]
            if zero:
                raise MergeError(
                    f"lora_magnitude_vector of {zero} has zero entries: a merge could not be undone (unmerge "
                    "divides by it). Use merge_and_unload(), which needs no unmerge, or keep the adapter unmerged"
                )

    def _merge_into(
        self, weight: Tensor, adapter_names: Sequence[str], norms: dict[str, Tensor], magnitudes: dict[str, Tensor]
    ) -> Tensor:
        """``weight`` (fp32/fp64, unmerged) with ``adapter_names`` composed in order; fills the undo state."""
        rows = self.weight_rows(weight)
        merged = weight
        for name in adapter_names:
            lora_a, lora_b = self.lora_factors(name)
            norms[name] = direct_row_norms(rows, lora_a, lora_b, self.scaling[name]).to(weight.dtype)
            magnitudes[name] = self.lora_magnitude_vector[name].detach().reshape(-1).to(weight.dtype, copy=True)
            factor = self.along_rows(magnitudes[name] / norms[name])
            merged = factor * (merged + self.low_rank_delta(name).to(weight.dtype))
        return merged

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        weight = self._weight()
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        norms: dict[str, Tensor] = {}
        magnitudes: dict[str, Tensor] = {}
        merged = self._merge_into(weight.detach().to(accumulate), adapter_names, norms, magnitudes)
        return Merge({"weight": merged.to(weight.dtype)}, state=DoraMerge(norms, magnitudes))

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        if not isinstance(state, DoraMerge):
            raise MergeError(f"{type(self).__name__} cannot unmerge without the norms of its merge")
        weight = self._weight()
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        restored = weight.detach().to(accumulate)
        for name in reversed(adapter_names):
            factor = self.along_rows(state.magnitudes[name].to(accumulate) / state.norms[name].to(accumulate))
            restored = restored / factor - self.low_rank_delta(name).to(accumulate)
        return {"weight": restored.to(weight.dtype)}

    # --- hotswap: the factors (LoRA's swap) and the magnitude ---

    def check_hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        super().check_hotswap(adapter_name, tensors, config)
        new, live = tensors[MAGNITUDE], self.lora_magnitude_vector[adapter_name]
        if new.shape != live.shape:
            raise PeftError(f"{MAGNITUDE} has shape {tuple(new.shape)} in the checkpoint, {tuple(live.shape)} here")

    def hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        super().hotswap(adapter_name, tensors, config)
        with torch.no_grad():
            self.lora_magnitude_vector[adapter_name].copy_(tensors[MAGNITUDE])
