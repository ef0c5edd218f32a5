"""``add_weighted_adapter`` for IA3: the weighted sum of the adapters' vectors, as Hugging Face PEFT.

Per layer ``l = sum_i w_i l_i`` over the adapters present there (an adapter absent from a
layer adds nothing, so a layer only some adapters target scales by less than one). The
result is a new IA3 adapter like the first one, on the union of their targets; an exact
operation on the vectors, though not on the models (scales multiply in the forward pass).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from peft_core.contract import MODEL_PREFIX, AdaptedModel, ConfigError, PeftError, adapter_layers
from peft_ia3.config import IA3Config
from peft_ia3.layer import IA3Layer

#: ``combination_type`` values: IA3 has one combination; None (the default) and "linear" name it.
COMBINATION_TYPES = ("linear",)


def weighted_adapter(
    model: AdaptedModel, adapters: Sequence[str], weights: Sequence[float], combination_type: str | None
) -> tuple[IA3Config, dict[str, Tensor]]:
    """The config and the ``ia3_l`` vectors (under their checkpoint keys) of the combined adapter."""
    if combination_type not in (None, *COMBINATION_TYPES):
        raise ConfigError(
            f"combination_type {combination_type!r} is not defined for IA3, whose vectors combine by their weighted "
            "sum: leave combination_type unset (or pass 'linear')"
        )
    configs = {a: model.peft_config[a] for a in adapters}
    saved = [a for a, config in configs.items() if getattr(config, "modules_to_save", None)]
    if saved:
        raise PeftError(
            f"adapters {saved} have modules_to_save (whole trained copies of modules), which cannot be "
            "combined; combine adapters without modules_to_save"
        )
    tensors: dict[str, Tensor] = {}
    feedforward: list[str] = []
    for path, layer in adapter_layers(model.model):
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in layer.adapter_configs]
        if not present:
            continue
        if not isinstance(layer, IA3Layer):
            raise PeftError(f"{path!r} is a {type(layer).__name__}, not an IA3 layer: it cannot be combined")
        kinds = {a: layer.is_feedforward[a] for a, _ in present}
        if len(set(kinds.values())) > 1:
            raise ConfigError(
                f"{path!r} scales its input for some adapters and its output for others ({kinds}); their vectors "
                "have different shapes and cannot be summed: combine adapters with the same feedforward_modules"
            )
        vector = torch.zeros_like(layer.ia3_l[present[0][0]], dtype=torch.float32)
        for adapter, weight in present:
            vector += layer.ia3_l[adapter].detach().float() * weight
        tensors[f"{MODEL_PREFIX}{path}.ia3_l"] = vector
        if kinds[present[0][0]]:
            feedforward.append(path)
    first = configs[adapters[0]]
    assert isinstance(first, IA3Config)
    paths = [key.removeprefix(MODEL_PREFIX).removesuffix(".ia3_l") for key in tensors]
    config = first.model_copy(
        update={
            # Escaped full paths: one module each, here and in Hugging Face PEFT.
            "target_modules": _exactly(paths),
            "feedforward_modules": _exactly(feedforward) if feedforward else [],
            "exclude_modules": None,
            "layers_to_transform": None,
            "layers_pattern": None,
            "modules_to_save": None,
            "inference_mode": True,
        }
    )
    return config, tensors


def _exactly(paths: Sequence[str]) -> str:
    """A regex that full-matches exactly these module paths."""
    return "|".join(f"(?:{re.escape(path)})" for path in paths)
