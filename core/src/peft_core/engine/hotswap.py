"""Hotswapping: replace an adapter's weights in place, without re-injection.

The swapped-in adapter must target the same modules. Parameters keep their identity and
shape, so a ``torch.compile``d model keeps its compiled graph. Methods whose shapes
depend on a hyper-parameter (LoRA's rank) need a one-time ``prepare_for_hotswap(model,
max_rank)`` before compiling: it pads every adapter to ``max_rank`` with exact zeros.
Only layers declaring ``capabilities.hotswap`` take part; the layer's own
``check_hotswap``/``hotswap`` do the checks and copies.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import AdapterLayer, adapter_layers
from peft_core.contract.tuner import MODEL_PREFIX
from peft_core.engine.state import model_configs, store_config
from peft_core.engine.tuned_model import view_of
from peft_core.errors import AdapterLoadError, PeftError
from peft_core.registry import registry


def inner_model(model: nn.Module) -> nn.Module:
    """The adapted model inside a ``PeftModel`` (``get_base_model()``), or ``model`` itself."""
    get_base = getattr(model, "get_base_model", None)
    inner = get_base() if callable(get_base) else model
    assert isinstance(inner, nn.Module)
    return inner


def prepare_for_hotswap(
    model: nn.Module,
    max_rank: int | None = None,
    *,
    target_rank: int | None = None,
    config: object = None,
    check_compiled: Literal["error", "warn", "ignore"] = "error",
) -> None:
    """Once, after loading the first adapter and before ``torch.compile``: let adapters of any
    rank <= ``max_rank`` be swapped in later without recompiling. Outputs do not change (the
    padding is exact zeros; scalings become tensors so new values need no recompile).

    Hugging Face PEFT's ``prepare_model_for_compiled_hotswap`` arguments are accepted:
    ``target_rank`` (= ``max_rank``), ``check_compiled`` (an already compiled model:
    "error", "warn" or "ignore"); ``config`` is not needed (the stored configs are
    updated by the swap itself) and is ignored.
    """
    rank = target_rank if max_rank is None else max_rank
    if target_rank is not None and max_rank is not None and target_rank != max_rank:
        raise PeftError(f"max_rank={max_rank} and target_rank={target_rank} disagree; give one of them")
    if isinstance(model, nn.Module) and "_orig_mod" in model._modules and check_compiled != "ignore":
        message = "prepare_for_hotswap is called on a compiled model: call it before torch.compile"
        if check_compiled == "error":
            raise PeftError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    if rank is not None and rank <= 0:
        raise PeftError(f"max_rank must be > 0, got {rank}")
    layers = [layer for _, layer in adapter_layers(inner_model(model)) if type(layer).capabilities.hotswap]
    if not layers:
        raise PeftError("prepare_for_hotswap: the model has no adapter layer that can be hotswapped")
    for layer in layers:
        layer.prepare_hotswap(rank)


def hotswap_adapter_from_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], config: PeftConfig, adapter_name: str = "default"
) -> None:
    """Replace adapter ``adapter_name``'s weights with ``state_dict`` (keys as saved).

    Everything is checked before anything is copied: a checkpoint that does not fit, a
    merged adapter or a layer that does not declare hotswapping raise ``AdapterLoadError``
    and leave the model as it was.
    """
    inner = inner_model(model)
    _refuse_model_level_adapter(model, adapter_name)
    layers = {path: layer for path, layer in adapter_layers(inner) if adapter_name in layer.adapter_configs}
    current = model_configs(inner).get(adapter_name)
    if not layers or current is None:
        raise AdapterLoadError(f"the model has no adapter {adapter_name!r} to hotswap; load it first")
    if config.peft_type != current.peft_type:
        raise AdapterLoadError(
            f"cannot hotswap a {config.peft_type} adapter into {current.peft_type} adapter {adapter_name!r}: "
            "a hotswap keeps the method; use load_adapter() for another one"
        )
    merged = sorted(path for path, layer in layers.items() if adapter_name in layer.merged_adapters)
    if merged:
        raise AdapterLoadError(
            f"cannot hotswap adapter {adapter_name!r}: it is currently merged (in {merged[:3]}); "
            "call unmerge_adapter() first, swap, then merge again"
        )
    refusing = sorted({type(layer).__name__ for layer in layers.values() if not type(layer).capabilities.hotswap})
    if refusing:
        raise AdapterLoadError(f"{', '.join(refusing)} do not declare hotswapping (capabilities.hotswap)")
    tuner = registry.new_tuner(config)
    config = config.model_copy(update={"inference_mode": current.inference_mode})
    per_layer = _split_by_layer(state_dict, layers)
    resolved = {path: tuner.resolve_config(config, path) for path in layers}
    for path, layer in layers.items():
        try:
            layer.check_hotswap(adapter_name, per_layer[path], resolved[path])
        except PeftError as exc:
            raise AdapterLoadError(f"{path}: {exc}; nothing was swapped") from None
    for path, layer in layers.items():
        layer.hotswap(adapter_name, per_layer[path], resolved[path])
    store_config(inner, adapter_name, config)


def _refuse_model_level_adapter(model: nn.Module, adapter_name: str) -> None:
    """A model-level adapter (virtual tokens) is swapped only if its tuner declares ``hotswap``."""
    view = view_of(model)
    if adapter_name in view.adapter_modules and not type(view.tuner).capabilities.hotswap:
        raise AdapterLoadError(
            f"{view.tuner.name} adapters do not declare hotswapping (capabilities.hotswap); "
            "use load_adapter() and set_adapter() to switch to another adapter"
        )


def _check_saved_base(layer: AdapterLayer, key: str, tensor: Tensor) -> None:
    """Base weights saved with an adapter (its embeddings) are not swapped: they must be the model's."""
    live = layer.get_parameter(key)
    if live.shape != tensor.shape or not bool((live.detach().cpu() == tensor.to(live.dtype)).all()):
        raise AdapterLoadError(
            f"the checkpoint carries base weights {key!r} that differ from the model's (a resized embedding?): "
            "a hotswap changes adapters only; use load_adapter() into a matching base model"
        )


def _split_by_layer(
    state_dict: Mapping[str, Tensor], layers: Mapping[str, AdapterLayer]
) -> dict[str, dict[str, Tensor]]:
    """Checkpoint tensors grouped by adapter layer, keyed relative to it; an error for the rest."""
    per_layer: dict[str, dict[str, Tensor]] = {path: {} for path in layers}
    # Longest paths first, so "a.b" is not taken for the layer "a".
    ordered = sorted(layers, key=len, reverse=True)
    stray = []
    for key, tensor in state_dict.items():
        name = key.removeprefix(MODEL_PREFIX)
        path = next((p for p in ordered if name.startswith(p + ".")), None)
        if path is None:
            stray.append(key)
        elif name[len(path) + 1 :].startswith("base_layer."):
            _check_saved_base(layers[path], name[len(path) + 1 :], tensor)
        else:
            per_layer[path][name[len(path) + 1 :]] = tensor
    if stray:
        raise AdapterLoadError(
            f"checkpoint tensors {stray[:5]} belong to no module of the adapter: a hotswap needs the same target "
            "modules (and no trained biases); use load_adapter() for a different adapter"
        )
    return per_layer
