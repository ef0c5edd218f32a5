"""``BaseTuner``: the generic half of every PEFT method (targeting, wrapping, freezing, merging)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from peft_core.config import PeftConfig
from peft_core.errors import ConfigError, MergeError, PeftError, TargetNotFoundError
from peft_core.layer import BASE_ADAPTER, AdapterLayer, adapter_layers
from peft_core.matching import (
    ALL_LINEAR,
    describe_unmatched,
    is_linear,
    layer_index,
    matches,
    output_head_names,
    unmatched_entries,
)
from peft_core.modules_to_save import ModulesToSaveWrapper

_HALF = (torch.float16, torch.bfloat16)


def validate_adapter_name(name: object) -> str:
    """An adapter name is a key in module dicts and a folder name: refuse what breaks either."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it must be a non-empty string"
    elif name == BASE_ADAPTER:
        problem = f"{BASE_ADAPTER!r} is reserved for rows without an adapter"
    elif any(c in name for c in "./\\") or not name.isprintable():
        problem = "it must not contain '.', '/', '\\' or control characters (it names a folder and a module key)"
    elif hasattr(nn.ModuleDict(), name):
        problem = f"{name!r} is an nn.Module attribute name"
    if problem:
        raise ConfigError(f"invalid adapter name {name!r}: {problem}")
    assert isinstance(name, str)
    return name


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (which must exist)."""
    parent_path, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent_path), leaf, module)


def plain_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Named modules of ``model``, not descending into adapter layers (they are yielded)."""
    inside: list[str] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(prefix) for prefix in inside):
            continue
        if isinstance(module, AdapterLayer):
            inside.append(path + ".")
        yield path, module


def _unwrap(module: nn.Module) -> nn.Module:
    return module.base_layer if isinstance(module, AdapterLayer) else module


def _adapter_dtype(layer: AdapterLayer, autocast: bool) -> tuple[torch.device, torch.dtype | None]:
    base = next((p for p in layer.base_layer.parameters() if p.is_floating_point()), None)
    if base is None:
        return torch.device("cpu"), None
    return base.device, torch.float32 if autocast and base.dtype in _HALF else base.dtype


class BaseTuner:
    """A PEFT method. Subclasses set ``name`` and ``config_class`` and implement
    ``create_layer``; the rest has working defaults.

    The core does the generic work here: find the targets, ask plugins and then the tuner
    for a layer, replace modules, freeze the base, track active adapters, merge
    transactionally, unload.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[PeftConfig]]

    # --- what a tuner supplies ---

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        """Wrap ``target`` in this method's layer with ``adapter_name`` added; None if unsupported."""
        return None

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        """The config for one module (e.g. with a per-module rank); default: unchanged."""
        return config

    def check_targets(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> None:
        """Method-specific checks of a config against the chosen targets (raise ConfigError)."""

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        """Base parameters this config trains and saves besides the adapter (e.g. biases)."""
        return {}

    def add_weighted_adapter(
        self,
        model: nn.Module,
        adapters: Sequence[str],
        weights: Sequence[float],
        adapter_name: str,
        combination_type: str,
        **options: Any,
    ) -> PeftConfig:
        """Add ``adapter_name`` combining ``adapters`` (weighted) and return its config.

        Methods that can combine adapters override this (LoRA does); by default it is an error.
        """
        raise PeftError(
            f"{self.name} adapters cannot be combined with add_weighted_adapter; this method is not supported by "
            f"the {self.name!r} tuner"
        )

    # --- targeting ---

    def find_targets(self, model: nn.Module, config: PeftConfig) -> list[str]:
        """Dotted paths of the modules ``config`` selects; an error for entries that match nothing."""
        spec = config.target_modules
        if not spec:
            raise ConfigError(
                f"{type(config).__name__}.target_modules is empty: name the modules to adapt "
                "(e.g. ['q_proj', 'v_proj']), give a regex, or use 'all-linear'"
            )
        candidates = list(plain_modules(model))
        paths = [path for path, _ in candidates]
        if spec == ALL_LINEAR:
            skip = output_head_names(model)
            chosen = [
                path
                for path, module in candidates
                if is_linear(_unwrap(module)) and path not in skip and not matches(path, config.modules_to_save)
            ]
        else:
            missing = unmatched_entries(spec, paths)
            if missing:
                raise TargetNotFoundError(describe_unmatched("target_modules", missing, paths))
            chosen = [path for path in paths if matches(path, spec)]
        if config.exclude_modules:
            missing = unmatched_entries(config.exclude_modules, paths)
            if missing:
                raise TargetNotFoundError(describe_unmatched("exclude_modules", missing, paths))
            chosen = [path for path in chosen if not matches(path, config.exclude_modules)]
        if config.layers_to_transform is not None:
            layers = config.layers_to_transform
            wanted = {layers} if isinstance(layers, int) else set(layers)
            chosen = [path for path in chosen if layer_index(path, config.layers_pattern) in wanted]
        if not chosen:
            raise TargetNotFoundError(
                f"target_modules={spec!r} with exclude_modules/layers_to_transform left no module to adapt"
            )
        return chosen

    # --- injection ---

    def inject(
        self, model: nn.Module, config: PeftConfig, adapter_name: str, *, autocast_adapter_dtype: bool = True
    ) -> list[str]:
        """Add adapter ``adapter_name`` to ``model`` in place; returns the wrapped module paths.

        Adapter tensors go on the base weight's device, in fp32 on a half-precision base
        when ``autocast_adapter_dtype`` (else in the base dtype). On any error the model
        is left as it was.
        """
        validate_adapter_name(adapter_name)
        if not isinstance(config, self.config_class):
            raise ConfigError(f"tuner {self.name!r} needs a {self.config_class.__name__}, got {type(config).__name__}")
        if any(adapter_name in layer.adapter_configs for _, layer in adapter_layers(model)):
            raise PeftError(f"adapter {adapter_name!r} already exists; delete it first or pick another name")
        targets = self.find_targets(model, config)
        saved = self._find_modules_to_save(model, config, targets)
        self.check_targets(model, config, targets)
        active_before = self.active_adapter_names(model)
        first = next(adapter_layers(model), None) is None
        try:
            for path in targets:
                self._add_to_module(
                    model, path, adapter_name, self.resolve_config(config, path), autocast_adapter_dtype
                )
            for path in saved:
                module = model.get_submodule(path)
                if not isinstance(module, ModulesToSaveWrapper):
                    module = ModulesToSaveWrapper(module)
                    set_submodule(model, path, module)
                module.add_adapter(adapter_name, config)
        except BaseException:
            self.delete_adapter(model, adapter_name)
            raise
        if first:
            self._freeze_base(model)
        elif not config.inference_mode:
            # Later adapters leave every existing requires_grad flag as it is.
            for param in self.extra_trainable_parameters(model, config).values():
                param.requires_grad_(True)
        self.set_active_adapters(model, active_before or [adapter_name])
        _note_shared_weights(model, [*targets, *saved])
        return targets

    def _add_to_module(
        self, model: nn.Module, path: str, adapter_name: str, config: PeftConfig, autocast: bool
    ) -> None:
        from peft_core.plugins import registry

        module = model.get_submodule(path)
        if isinstance(module, ModulesToSaveWrapper):
            raise ConfigError(f"{path!r} is in modules_to_save of another adapter and cannot also be a target")
        if isinstance(module, AdapterLayer):
            other = next(iter(module.adapter_configs.values()), None)
            if other is not None and other.peft_type != config.peft_type:
                raise ConfigError(
                    f"{path!r} already holds a {other.peft_type} adapter; one model takes adapters of one "
                    f"method, so {config.peft_type} cannot be added there"
                )
            layer: AdapterLayer | None = module
            module.add_adapter(adapter_name, config)
        else:
            layer = registry.adapter_layer(self, module, adapter_name, config)
            if layer is None:
                layer = self.create_layer(module, adapter_name, config)
            if layer is None:
                raise ConfigError(
                    f"tuner {self.name!r} cannot adapt {path!r} of type {type(module).__name__}; target "
                    "supported layers instead, or install a plugin that implements peft_adapter_layer for it"
                )
            if adapter_name not in layer.adapter_configs:
                raise PeftError(f"{type(layer).__name__} was returned without adapter {adapter_name!r} added")
            set_submodule(model, path, layer)
        assert layer is not None
        device, dtype = _adapter_dtype(layer, autocast)
        layer.place_adapter(adapter_name, device, dtype)

    def _find_modules_to_save(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> list[str]:
        if not config.modules_to_save:
            return []
        candidates = list(plain_modules(model))
        paths = [path for path, _ in candidates]
        missing = unmatched_entries(config.modules_to_save, paths)
        if missing:
            raise TargetNotFoundError(describe_unmatched("modules_to_save", missing, paths))
        chosen = [path for path, m in candidates if matches(path, config.modules_to_save)]
        clash = sorted(set(chosen) & set(targets))
        if clash:
            raise ConfigError(f"modules {clash} are both targets and modules_to_save; choose one for each")
        for path in chosen:
            module = model.get_submodule(path)
            if isinstance(module, AdapterLayer) and not isinstance(module, ModulesToSaveWrapper):
                raise ConfigError(f"{path!r} already holds an adapter and cannot be in modules_to_save")
        return chosen

    def _freeze_base(self, model: nn.Module) -> None:
        keep: set[int] = set()
        configs: dict[str, PeftConfig] = {}
        for _, layer in adapter_layers(model):
            for adapter in layer.adapter_configs:
                keep.update(id(p) for p in layer.adapter_parameters(adapter))
            configs.update(layer.adapter_configs)
        for param in model.parameters():
            if id(param) not in keep:
                param.requires_grad_(False)
        for config in configs.values():
            if not config.inference_mode:
                for param in self.extra_trainable_parameters(model, config).values():
                    param.requires_grad_(True)

    # --- adapter state ---

    def active_adapter_names(self, model: nn.Module) -> list[str]:
        """The model-wide active list (empty when the model holds no adapter)."""
        return next((list(layer.requested_adapters) for _, layer in adapter_layers(model)), [])

    def set_active_adapters(self, model: nn.Module, adapter_names: Sequence[str]) -> None:
        """Make exactly these adapters active in every layer; trainability is not touched."""
        for _, layer in adapter_layers(model):
            layer.set_active_adapters(adapter_names)

    def set_disabled(self, model: nn.Module, disabled: bool) -> None:
        """Switch every adapter layer off (base outputs) or back on."""
        for _, layer in adapter_layers(model):
            layer.disabled = disabled

    def delete_adapter(self, model: nn.Module, adapter_name: str) -> None:
        """Remove an adapter everywhere; layers left without adapters are unwrapped."""
        for path, layer in list(adapter_layers(model)):
            if adapter_name in layer.adapter_configs or not layer.adapter_configs:
                layer.delete_adapter(adapter_name)
                if not layer.adapter_configs:
                    set_submodule(model, path, layer.base_layer)

    # --- merging ---

    def merge(
        self,
        model: nn.Module,
        adapter_names: Sequence[str] | None = None,
        safe: bool = False,
        reversible: bool = True,
        exact_unmerge: bool = True,
    ) -> None:
        """Merge adapters (default: the active ones) into the base weights, all layers or none.

        Every layer is checked before any is written: with ``safe`` that its merged weights
        are finite, with ``reversible`` that an unmerge can undo it. A failure part-way
        rolls back the layers already merged, bit for bit. With ``exact_unmerge`` a later
        unmerge restores the weights bit for bit too, at the cost of CPU memory for the
        residues (see ``exact_merge``); without, it restores them within one rounding step.
        """
        layers = list(adapter_layers(model))
        names = list(adapter_names) if adapter_names is not None else self.active_adapter_names(model)
        unknown = sorted(set(names) - {n for _, layer in layers for n in layer.adapter_configs})
        if unknown:
            raise MergeError(f"cannot merge unknown adapters {unknown}")
        for path, layer in layers:
            try:
                layer.check_merge(names, reversible=reversible, finite=safe)
            except MergeError as exc:
                raise MergeError(f"{path}: {str(exc).rstrip('.')}; nothing was merged") from None
        done: list[tuple[AdapterLayer, list[str]]] = []
        try:
            for _, layer in layers:
                before = set(layer.merged_adapters)
                layer.merge(names)
                done.append((layer, [n for n in layer.merged_adapters if n not in before]))
        except Exception as exc:
            for layer, merged_now in reversed(done):
                layer.unmerge(merged_now)
            failed = layers[len(done)][0]
            raise MergeError(f"merge failed at {failed} and was rolled back in every layer: {exc}") from exc
        if not exact_unmerge:
            for layer, _ in done:
                layer.drop_merge_residues()

    def unmerge(self, model: nn.Module) -> None:
        """Take every merged adapter out of the base weights (every layer is checked first)."""
        layers = list(adapter_layers(model))
        for path, layer in layers:
            try:
                layer.check_unmerge(layer.merged_adapters)
            except MergeError as exc:
                raise MergeError(f"{path}: {str(exc).rstrip('.')}; nothing was unmerged") from None
        for _, layer in layers:
            layer.unmerge()

    def unload(
        self, model: nn.Module, merge: bool, adapter_names: Sequence[str] | None = None, safe: bool = False
    ) -> nn.Module:
        """Remove every adapter layer, merging the adapters into the base weights first if ``merge``."""
        if merge:
            self.merge(model, adapter_names, safe, reversible=False)
        else:
            self.unmerge(model)
        for path, layer in list(adapter_layers(model)):
            set_submodule(model, path, layer.unwrapped(merge))
        return model


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
