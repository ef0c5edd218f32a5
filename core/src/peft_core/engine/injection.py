"""Adding an adapter to a model: prepare its config, wrap the targets, freeze the base.

Everything is checked before the model changes, and an error part-way removes what was
added: the model is left as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import AdapterLayer, adapter_layers
from peft_core.contract.tuner import BaseTuner
from peft_core.engine.modules_to_save import ModulesToSaveWrapper
from peft_core.engine.partitioning import refuse_split_model
from peft_core.engine.state import (
    active_adapter_names,
    delete_adapter,
    model_configs,
    set_active_adapters,
    store_config,
)
from peft_core.engine.targeting import (
    find_modules_to_save,
    find_targets,
    set_submodule,
    validate_adapter_name,
    with_default_targets,
    with_task_heads,
)
from peft_core.errors import ConfigError, PeftError
from peft_core.registry import install_hint, registry

_HALF = (torch.float16, torch.bfloat16)


class AdapterHolder(Protocol):
    """Where model-level adapters live (``TunedModel``): injection adds and removes them there."""

    def add_adapter_module(self, adapter_name: str, module: nn.Module) -> None: ...

    def remove_adapter_module(self, adapter_name: str) -> None: ...


def tuner_for(model: nn.Module, config: PeftConfig) -> BaseTuner:
    """The tuner for ``config``; an error if ``model`` already holds adapters of another method."""
    tuner = registry.new_tuner(config)
    existing = next(iter(model_configs(model).values()), None)
    if existing is not None and existing.peft_type != config.peft_type:
        raise ConfigError(
            f"this model holds {existing.peft_type} adapters; one model takes adapters of one method, "
            f"so a {config.peft_type} adapter ({type(config).__name__}) cannot be added"
        )
    return tuner


def prepare(model: nn.Module, tuner: BaseTuner, config: PeftConfig) -> tuple[PeftConfig, list[str], list[str]]:
    """The prepared config (a copy; ``config`` is not changed), the targets and the modules to save."""
    if not isinstance(config, tuner.config_class):
        raise ConfigError(f"tuner {tuner.name!r} needs a {tuner.config_class.__name__}, got {type(config).__name__}")
    tuner.check_config(config)
    own = with_task_heads(model, config.model_copy(deep=True))
    targets: list[str] = []
    if tuner.targets_modules:
        own = with_default_targets(tuner, model, own)
        targets = find_targets(model, own)
    saved = find_modules_to_save(model, own, targets)
    prepared = tuner.prepare_config(model, own, targets)
    if type(prepared) is not type(config):
        raise PeftError(f"{type(tuner).__name__}.prepare_config returned a {type(prepared).__name__}")
    return prepared, targets, saved


def inject(
    model: nn.Module,
    config: PeftConfig,
    adapter_name: str,
    *,
    autocast_adapter_dtype: bool = True,
    holder: AdapterHolder | None = None,
) -> PeftConfig:
    """Add adapter ``adapter_name`` to ``model`` in place; returns the stored (prepared) config.

    Adapter tensors go on the base weight's device, in fp32 on a half-precision base
    when ``autocast_adapter_dtype`` (else in the base dtype). Model-level adapters (prompt
    learning) need a ``holder``. On any error the model is left as it was.
    """
    validate_adapter_name(adapter_name)
    if adapter_name in model_configs(model):
        raise PeftError(f"adapter {adapter_name!r} already exists; delete it first or pick another name")
    refuse_split_model(model, f"add adapter {adapter_name!r}")
    tuner = tuner_for(model, config)
    prepared, targets, saved = prepare(model, tuner, config)
    active_before = active_adapter_names(model)
    first = not model_configs(model)
    try:
        for path in targets:
            _add_to_module(
                model, tuner, path, adapter_name, tuner.resolve_config(prepared, path), autocast_adapter_dtype
            )
        for path in saved:
            module = model.get_submodule(path)
            if not isinstance(module, ModulesToSaveWrapper):
                module = ModulesToSaveWrapper(module)
                set_submodule(model, path, module)
            module.add_adapter(adapter_name, prepared)
        model_adapter = tuner.create_model_adapter(model, adapter_name, prepared)
        if model_adapter is not None:
            if holder is None:
                raise ConfigError(
                    f"{tuner.name} adds a model-level adapter (it changes the model's inputs), which needs a "
                    "PeftModel: use get_peft_model(model, config) instead of inject_adapter_in_model"
                )
            model_adapter.requires_grad_(not prepared.inference_mode)
            holder.add_adapter_module(adapter_name, model_adapter)
        _refuse_shared_extra_parameters(model, tuner, adapter_name, prepared)
        store_config(model, adapter_name, prepared)
    except BaseException:
        delete_adapter(model, adapter_name)
        if holder is not None:
            holder.remove_adapter_module(adapter_name)
        raise
    if first:
        _freeze_base(model, tuner, prepared)
    elif not prepared.inference_mode:
        # Later adapters leave every existing requires_grad flag as it is.
        for param in tuner.extra_trainable_parameters(model, prepared).values():
            param.requires_grad_(True)
    set_active_adapters(model, active_before or [adapter_name])
    _note_shared_weights(model, [*targets, *saved])
    return prepared


def _add_to_module(
    model: nn.Module, tuner: BaseTuner, path: str, adapter_name: str, config: PeftConfig, autocast: bool
) -> None:
    module = model.get_submodule(path)
    if isinstance(module, ModulesToSaveWrapper):
        raise ConfigError(f"{path!r} is in modules_to_save of another adapter and cannot also be a target")
    if isinstance(module, AdapterLayer):
        layer = module
    else:
        found = registry.adapter_layer(tuner, module, adapter_name, config)
        if found is None:
            _refuse_foreign_weights(tuner, path, module)
            found = tuner.create_layer(module, adapter_name, config)
        if found is None:
            raise ConfigError(
                f"tuner {tuner.name!r} cannot adapt {path!r} of type {type(module).__name__}; target "
                "supported layers instead, or install a plugin that implements peft_adapter_layer for it"
            )
        layer = found
    if adapter_name not in layer.adapter_configs:
        layer.add_adapter(adapter_name, config)
    if layer is not module:
        set_submodule(model, path, layer)
    device, dtype = _adapter_dtype(layer, autocast)
    layer.place_adapter(adapter_name, device, dtype)


def _refuse_foreign_weights(tuner: BaseTuner, path: str, module: nn.Module) -> None:
    """Refuse a module whose weights are not plain float tensors (quantized): a layer that does
    not know the storage would compute with the packed bytes. A plugin must supply the layer."""
    odd = [
        name
        for name, param in module.named_parameters(recurse=False)
        if type(param) is not nn.Parameter or not param.is_floating_point()
    ]
    if not odd and not type(module).__module__.startswith("bitsandbytes"):
        return
    hint = "pip install peft-bnb" if type(module).__module__.startswith("bitsandbytes") else install_hint()
    raise ConfigError(
        f"{path!r} is a {type(module).__module__}.{type(module).__name__} whose weights are not plain float "
        f"tensors ({', '.join(odd) or 'quantized'}); {tuner.name} cannot wrap it without a plugin that knows "
        f"this layer type: {hint}"
    )


def _refuse_shared_extra_parameters(model: nn.Module, tuner: BaseTuner, adapter_name: str, config: PeftConfig) -> None:
    """Two adapters must not both train the same base tensor (``bias="all"`` twice): each would
    save, and training either would change, the other's values."""
    mine = tuner.extra_trainable_parameters(model, config)
    if not mine:
        return
    for other_name, other in model_configs(model).items():
        theirs = {id(p) for p in tuner.extra_trainable_parameters(model, other).values()}
        shared = sorted(path for path, p in mine.items() if id(p) in theirs)
        if shared:
            raise ConfigError(
                f"adapter {adapter_name!r} would train base tensors that adapter {other_name!r} trains too "
                f"({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}): both would save and change the same "
                "values. Give one of them bias='none', or put both biases into one adapter"
            )


def _adapter_dtype(layer: AdapterLayer, autocast: bool) -> tuple[torch.device, torch.dtype | None]:
    base = next((p for p in layer.base_layer.parameters() if p.is_floating_point()), None)
    if base is None:
        return torch.device("cpu"), None
    return base.device, torch.float32 if autocast and base.dtype in _HALF else base.dtype


def _freeze_base(model: nn.Module, tuner: BaseTuner, config: PeftConfig) -> None:
    keep: set[int] = set()
    for _, layer in adapter_layers(model):
        for adapter in layer.adapter_configs:
            keep.update(id(p) for p in layer.adapter_parameters(adapter))
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
    if not config.inference_mode:
        for param in tuner.extra_trainable_parameters(model, config).values():
            param.requires_grad_(True)


def _note_shared_weights(model: nn.Module, paths: Sequence[str]) -> None:
    """Record on each adapter layer which base parameters other modules share (tied weights).

    Ties are found by parameter identity, as transformers ties embeddings. Merging into a
    shared weight would change the other modules too, so those layers refuse to merge;
    a warning at injection says so before any training is spent.
    """
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    noted: list[str] = []
    for path, layer in adapter_layers(model):
        layer.shared_weights = {}
        for name, param in layer.base_layer.named_parameters():
            others = [other for other in owners.get(id(param), []) if not other.startswith(path + ".")]
            if others:
                layer.shared_weights[name] = others
        if layer.shared_weights and path in paths:
            noted.append(f"{path} ({', '.join(f'{n} is also {o[0]}' for n, o in layer.shared_weights.items())})")
    if noted:
        warnings.warn(
            f"adapters on modules with tied weights: {'; '.join(noted)}. They train and run unmerged as "
            "usual, but merging into them is refused: it would change the tied modules too.",
            UserWarning,
            stacklevel=4,
        )
