"""A PiSSA/OLoRA adapter as a plain LoRA of the original base model (``path_initial_model_for_weight_conversion``).

PiSSA and OLoRA train on ``W_res = W - s B0 A0``. After training the model computes
``W_res + s B A = W + s (B A - B0 A0)``: a LoRA of twice the rank on the original ``W``,
``A' = [A; A0]`` and ``B' = [B, -B0]`` with the same scaling (``r`` and ``lora_alpha``
doubled; ``alpha * sqrt(2)`` with rank-stabilised scaling). It loads onto the original base
model in any tool, with other adapters, and switches off like any LoRA. The same tensors
and config as Hugging Face PEFT's conversion (which, unlike this one, drops Embedding factors,
and concatenates a grouped convolution's factors without regard to its groups).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from peft_core.contract import MODEL_PREFIX, AdaptedModel, ConfigError, PeftConfig, PeftError, adapter_layers
from peft_lora.config import LoraConfig
from peft_lora.grouped_conv import GroupedConv
from peft_lora.layer import LoraLayer
from peft_lora.mha import OUT_PREFIX, MultiheadAttention


def relative_to_initial(
    model: AdaptedModel, adapter_name: str, tensors: Mapping[str, Tensor], initial_tensors: Mapping[str, Tensor]
) -> tuple[LoraConfig, dict[str, Tensor]]:
    """The config and tensors of the plain LoRA equal to ``adapter_name`` minus its initial state."""
    config = model.peft_config[adapter_name]
    assert isinstance(config, LoraConfig)
    if config.use_rslora and (config.rank_pattern or config.alpha_pattern):
        raise ConfigError(
            "path_initial_model_for_weight_conversion cannot keep the scaling of use_rslora=True with "
            "rank_pattern/alpha_pattern (as in Hugging Face PEFT); save without the conversion"
        )
    converted = dict(tensors)
    for path, layer in adapter_layers(model.model):
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.adapter_configs:
            continue
        prefix = f"{MODEL_PREFIX}{path}." if path else MODEL_PREFIX
        for key_a, key_b, groups in _factor_pairs(layer):
            _double(path, prefix + key_a, prefix + key_b, groups, tensors, initial_tensors, converted, adapter_name)
    return _doubled(config), converted


def _factor_pairs(layer: LoraLayer) -> list[tuple[str, str, int]]:
    """``(A key, B key, groups of B)`` of each factor pair of the layer (an attention has two)."""
    if isinstance(layer, MultiheadAttention):
        return [("lora_A.weight", "lora_B.weight", 1), (OUT_PREFIX + "lora_A.weight", OUT_PREFIX + "lora_B.weight", 1)]
    key_a, key_b = layer.factor_keys
    return [(key_a, key_b, layer.b_groups() if isinstance(layer, GroupedConv) else 1)]


def _double(
    path: str,
    key_a: str,
    key_b: str,
    groups: int,
    tensors: Mapping[str, Tensor],
    initial_tensors: Mapping[str, Tensor],
    converted: dict[str, Tensor],
    adapter_name: str,
) -> None:
    """``A' = [A; A0]``, ``B' = [B, -B0]``; with a grouped ``B``, per group (group g of B' reads
    rows g of A, then g of A0)."""
    missing = [key for key in (key_a, key_b) if key not in initial_tensors]
    if missing:
        raise PeftError(
            f"the initial adapter has no {missing}: path_initial_model_for_weight_conversion must be the "
            f"adapter {adapter_name!r} as saved right after it was created"
        )
    initial_a, initial_b = initial_tensors[key_a], initial_tensors[key_b]
    if initial_a.shape != tensors[key_a].shape or initial_b.shape != tensors[key_b].shape:
        raise PeftError(
            f"the initial adapter's factors of {path!r} have shapes {tuple(initial_a.shape)}, "
            f"{tuple(initial_b.shape)}, the trained ones {tuple(tensors[key_a].shape)}, "
            f"{tuple(tensors[key_b].shape)}: it is not this adapter's initial state"
        )
    a, b = tensors[key_a], tensors[key_b]
    initial_a, initial_b = initial_a.to(a.device, a.dtype), initial_b.to(b.device, b.dtype)
    per_group = [a.shape[0] // groups] * groups
    halves = zip(torch.split(a, per_group), torch.split(initial_a, per_group), strict=True)
    rows = [torch.cat(pair, dim=0) for pair in halves]
    converted[key_a] = torch.cat(rows, dim=0)
    converted[key_b] = torch.cat([b, -initial_b], dim=1)


def _doubled(config: LoraConfig) -> LoraConfig:
    """Twice the rank at the same scaling, initialised as plain LoRA (no base split on load)."""
    alpha = config.lora_alpha * (2**0.5 if config.use_rslora else 2)
    update: dict[str, object] = {
        "r": 2 * config.r,
        "lora_alpha": alpha,
        "rank_pattern": {key: 2 * r for key, r in config.rank_pattern.items()},
        "alpha_pattern": {key: 2 * a for key, a in config.alpha_pattern.items()},
        "init_lora_weights": True,
    }
    return config.model_copy(update=update)


def check_initial_config(initial: PeftConfig) -> None:
    """The initial adapter must be a LoRA adapter."""
    if not isinstance(initial, LoraConfig):
        raise PeftError(
            f"path_initial_model_for_weight_conversion holds a {type(initial).__name__} adapter; it must be the "
            "LoRA adapter saved right after creation"
        )
