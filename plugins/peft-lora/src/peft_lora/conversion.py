"""Any adapter whose layers change the base weight, as a LoRA adapter (which serving tools read).

For each adapter layer the update of its base weight is read through the contract, never
through a method's own names: ``delta_weight`` where it agrees with ``merged_weights``
(additive methods: LoRA, LoHa, LoKr), else ``merged_weights - W`` (DoRA, OFT, IA3...). The
update ``ΔW``, as a matrix ``M`` (out, in) in LoRA's orientation, is replaced by its
truncated SVD ``M ≈ U_k S_k Vh_k``: ``B = U_k S_k``, ``A = Vh_k`` with scaling 1
(``lora_alpha = r``). ``k`` is the chosen rank (at most the matrix's), or the smallest
``k`` whose singular values hold the ``energy`` fraction of ``sum S^2``. The relative
error per layer, ``||M - B A||_F / ||M||_F = sqrt(sum_{i >= k} S_i^2 / sum_i S_i^2)``, is
reported (Eckart-Young: no rank-k adapter does better). An adapter that also changes
the base bias (IA3 output scaling, LoRA with ``lora_bias``) converts to ``lora_bias=True``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from peft_core import ModulesToSaveWrapper, PeftModel
from peft_core.contract import MODEL_PREFIX, AdapterLayer, ConfigError, MergeError, PeftError, adapter_layers
from peft_lora.config import LoraConfig
from peft_lora.conv import Conv
from peft_lora.embedding import Embedding
from peft_lora.grouped_conv import is_grouped_conv
from peft_lora.layer import Linear, LoraLayer
from peft_lora.tuner import LoraTuner


@dataclass(frozen=True)
class LayerConversion:
    """One converted layer: its module path, the LoRA rank and ``||ΔW - B A||_F / ||ΔW||_F``."""

    path: str
    rank: int
    relative_error: float


@dataclass
class Conversion:
    """The LoRA adapter (config and checkpoint tensors) and what each layer lost."""

    config: LoraConfig
    tensors: dict[str, Tensor]
    layers: list[LayerConversion] = field(default_factory=list)

    @property
    def max_relative_error(self) -> float:
        return max((layer.relative_error for layer in self.layers), default=0.0)


@torch.no_grad()  # the factors are results, not part of a graph (a trainable adapter has grads on)
def lora_conversion(
    model: nn.Module,
    adapter_name: str = "default",
    rank: int | None = None,
    energy: float | None = None,
    progressbar: bool = False,
) -> Conversion:
    """Convert ``adapter_name`` of ``model`` (a ``PeftModel``, or a model with adapters injected) to LoRA at
    ``rank`` or ``energy`` (one of them)."""
    if (rank is None) == (energy is None):
        raise ConfigError("give either rank (an int > 0) or energy (a fraction in (0, 1]), not both or neither")
    if rank is not None and (not isinstance(rank, int) or rank <= 0):
        raise ConfigError(f"rank={rank!r}: pass an integer > 0")
    if energy is not None and not 0 < energy <= 1:
        raise ConfigError(f"energy={energy!r}: pass the fraction of sum(S^2) to keep, in (0, 1], e.g. 0.99")
    source = _source_config(model, adapter_name)
    root = model.get_base_model() if isinstance(model, PeftModel) else model  # paths as in the checkpoint
    layers = [(p, layer) for p, layer in adapter_layers(root) if adapter_name in layer.adapter_configs]
    if not any(not isinstance(layer, ModulesToSaveWrapper) for _, layer in layers):
        raise PeftError(f"the model has no adapter layers of {adapter_name!r} to convert")
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    report: list[LayerConversion] = []
    saved: list[str] = []
    biases: dict[str, Tensor] = {}
    for path, layer in _progress(layers, progressbar):
        prefix = f"{MODEL_PREFIX}{path}." if path else MODEL_PREFIX
        if isinstance(layer, ModulesToSaveWrapper):  # a whole trained copy: carried over as it is
            saved.append(path)
            tensors.update({prefix + k: t.detach().clone() for k, t in layer.adapter_state_dict(adapter_name).items()})
            continue
        lora = _lora_layer_for(path, layer)
        delta, bias = update_of(path, layer, adapter_name)
        a, b, error = _truncated(_as_matrix(lora, delta), rank, energy)
        key_a, key_b = lora.factor_keys
        shape_a, shape_b = _factor_shapes(lora, a.shape[0])
        tensors[prefix + key_a] = a.reshape(shape_a).contiguous()
        tensors[prefix + key_b] = b.reshape(shape_b).contiguous()
        if bias is not None:
            if isinstance(lora, Embedding):
                raise PeftError(f"{path!r}: the adapter changes an embedding's bias, which LoRA cannot carry")
            biases[prefix + "lora_B.bias"] = bias
        ranks[path] = a.shape[0]
        report.append(LayerConversion(path, a.shape[0], error))
    if biases:  # lora_bias: B's bias carries the bias update (scaling 1); zero where a layer has none
        for path in ranks:
            key = f"{MODEL_PREFIX}{path}.lora_B.bias"
            out = tensors[f"{MODEL_PREFIX}{path}.lora_B.weight"].shape[0]
            tensors[key] = biases.get(key, torch.zeros(out))
    config = _config(source, ranks, getattr(source, "modules_to_save", None) or saved)
    return Conversion(config.model_copy(update={"lora_bias": bool(biases)}), tensors, report)


def conversion_at(
    model: nn.Module, rank: int | float, adapter_name: str = "default", progressbar: bool = False
) -> Conversion:
    """``lora_conversion`` with Hugging Face PEFT's ``rank`` argument: an int rank, or a float energy threshold."""
    return lora_conversion(
        model,
        adapter_name,
        rank=rank if isinstance(rank, int) else None,
        energy=None if isinstance(rank, int) else float(rank),
        progressbar=progressbar,
    )


def convert_to_lora(
    model: nn.Module, rank: int | float, adapter_name: str = "default", progressbar: bool = False
) -> tuple[LoraConfig, dict[str, Tensor]]:
    """As Hugging Face PEFT's ``convert_to_lora``: an int ``rank``, or a float energy threshold."""
    conversion = conversion_at(model, rank, adapter_name, progressbar)
    return conversion.config, conversion.tensors


def update_of(path: str, layer: AdapterLayer, adapter_name: str) -> tuple[Tensor, Tensor | None]:
    """The adapter's change of ``base_layer.weight`` (fp32, the weight's shape) and of its bias (None if
    unchanged), read through the contract."""
    if not type(layer).capabilities.mergeable:
        raise PeftError(
            f"{path!r} is a {type(layer).__name__}, which does not declare mergeable: it gives no update of its "
            "base weight, so it cannot be converted to LoRA"
        )
    base = layer.base_layer
    weight = base.get_parameter("weight")
    merged = layer.merged_weights([adapter_name])
    bias_update: Tensor | None = None
    for name, value in merged.weights.items():
        if name == "bias" and not torch.equal(value, base.get_parameter(name)):
            bias_update = value.float() - base.get_parameter(name).float()
        elif name not in ("weight", "bias") and not torch.equal(value, base.get_parameter(name)):
            raise PeftError(
                f"{path!r}: the adapter changes the base layer's {name!r}, which a LoRA adapter cannot carry (it "
                "changes the weight and, with lora_bias, the bias); such adapters cannot be converted"
            )
    accumulate = torch.promote_types(weight.dtype, torch.float32)
    try:
        delta = layer.delta_weight(adapter_name).to(accumulate)
    except MergeError:
        delta = None
    # delta_weight is exact where merging adds it: the merge is then W + ΔW rounded once.
    if delta is not None and torch.equal((weight.to(accumulate) + delta).to(weight.dtype), merged.weights["weight"]):
        return delta.float(), bias_update
    return (merged.weights["weight"].to(accumulate) - weight.to(accumulate)).float(), bias_update


def _source_config(model: nn.Module, adapter_name: str) -> Any:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or adapter_name not in configs:
        raise PeftError(f"the model has no adapter {adapter_name!r} (adapters: {list(configs or {})})")
    config = configs[adapter_name]
    bias = getattr(config, "bias", "none")
    if bias != "none":
        raise PeftError(
            f"adapter {adapter_name!r} trains biases (bias={bias!r}), which a converted LoRA adapter would "
            "not carry; convert adapters with bias='none'"
        )
    return config


def _lora_layer_for(path: str, layer: AdapterLayer) -> LoraLayer:
    """A bare LoRA layer for the same base module: it knows the factor keys and shapes."""
    base = layer.base_layer
    # A grouped convolution's LoRA has a grouped B (not one rank-r pair); an attention's, two weights.
    lora = None if is_grouped_conv(base) else LoraTuner().create_layer(base, "conversion", LoraConfig())
    if not isinstance(lora, Linear | Embedding | Conv):
        raise PeftError(
            f"{path!r} wraps a {type(base).__name__}{' with groups > 1' if is_grouped_conv(base) else ''}, whose "
            "update cannot be converted to LoRA factors (conversion supports Linear, transformers Conv1D, "
            "Embedding and Conv1d/2d/3d with groups=1)"
        )
    return lora


def _as_matrix(lora: LoraLayer, delta: Tensor) -> Tensor:
    """``ΔW`` as LoRA's ``B A`` matrix (out, in): transposed for (in, out) weights and embeddings."""
    transposed = isinstance(lora, Embedding) or getattr(lora, "fan_in_fan_out", False)
    matrix = delta.flatten(1)
    return matrix.T if transposed else matrix


def _factor_shapes(lora: LoraLayer, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    weight = lora.base_layer.get_parameter("weight")
    if isinstance(lora, Embedding):
        return (rank, weight.shape[0]), (weight.shape[1], rank)
    if isinstance(lora, Conv):
        kernel = tuple(weight.shape[2:])
        return (rank, weight.shape[1], *kernel), (weight.shape[0], rank, *(1,) * len(kernel))
    assert isinstance(lora, Linear)
    return (rank, lora.in_features), (lora.out_features, rank)


def _truncated(matrix: Tensor, rank: int | None, energy: float | None) -> tuple[Tensor, Tensor, float]:
    """``(A, B, relative error)`` of the rank-k truncated SVD of ``matrix`` (fp32)."""
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    if rank is not None:
        k = min(rank, s.numel())
    else:  # the smallest k with sum_{i<k} S_i^2 >= energy * sum S^2 (Hugging Face PEFT's cut, in fp32)
        assert energy is not None
        kept = torch.cumsum(s**2, dim=0)
        k = min(int(torch.searchsorted(kept, energy * kept[-1]).item()) + 1, s.numel())
    squares = s.double().square()
    total = float(squares.sum())
    error = math.sqrt(float(squares[k:].sum()) / total) if total > 0 else 0.0
    return vh[:k].contiguous(), (u[:, :k] * s[:k]).contiguous(), error


def _config(source: Any, ranks: dict[str, int], saved: list[str]) -> LoraConfig:
    """Targets exactly the converted modules, each at its rank with scaling 1."""
    values = list(ranks.values())
    common = max(sorted(set(values)), key=values.count)
    pattern = {re.escape(path): r for path, r in ranks.items() if r != common}
    return LoraConfig(
        r=common,
        lora_alpha=common,
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        target_modules="|".join(f"(?:{re.escape(path)})" for path in ranks),
        modules_to_save=saved or None,
        task_type=getattr(source, "task_type", None),
        base_model_name_or_path=getattr(source, "base_model_name_or_path", None),
        revision=getattr(source, "revision", None),
        inference_mode=True,
    )


def _progress(items: list[tuple[str, AdapterLayer]], enabled: bool) -> Iterator[tuple[str, AdapterLayer]]:
    """``items`` with a tqdm bar on stderr when enabled and tqdm is installed (else a plain iteration)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # an optional dependency: the conversion works without a bar
            pass
        else:
            yield from tqdm(items, desc="convert to LoRA", unit="layer")
            return
    yield from items
