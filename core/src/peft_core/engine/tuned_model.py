"""``TunedModel``: the user's model with its adapters (``PeftModel.base_model``).

It is what Hugging Face PEFT's users reach as ``model.base_model`` (``.model``,
``.peft_config``, ``.active_adapters``, ``.set_adapter``) and what a tuner's model-level
hooks receive (``AdaptedModel``): the module-level adapters live in the user's model, the
model-level ones (virtual tokens) in ``adapter_modules`` here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import adapter_layers, loading_every_tensor
from peft_core.contract.tuner import BaseTuner
from peft_core.engine import merging, state
from peft_core.engine.injection import inject
from peft_core.engine.partitioning import refuse_ungathered
from peft_core.errors import AdapterNotFoundError, MergeError, PeftError
from peft_core.registry import registry

MODEL_HOOKS = ("prepare_inputs", "prepare_generate", "prepare_generation_inputs", "adapter_loss", "on_step_end")


class TunedModel(nn.Module):
    """Holds the user's model as ``.model``, so checkpoint keys read ``base_model.model.<path>``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.adapter_modules = nn.ModuleDict()  # model-level adapters by name
        self._active: list[str] = []
        self.disabled = False
        self._tuner: BaseTuner | None = None
        #: Model-level hooks the tuner overrides (``prepare_inputs``...): a forward reads only
        #: this set, so methods without hooks cost nothing there (and torch.compile sees no lookup).
        self.model_hooks: frozenset[str] = frozenset()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tuner"] = None  # holds the plugin manager's hooks; made again on use
        return state

    def _adapters_changed(self) -> None:
        self._tuner = None
        if not self.peft_config:
            self.model_hooks = frozenset()
            return
        tuner_class = type(self.tuner)
        self.model_hooks = frozenset(
            name for name in MODEL_HOOKS if getattr(tuner_class, name) is not getattr(BaseTuner, name)
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "adapter_modules", "_modules") or name.startswith("__"):
                raise
            return getattr(self.model, name)

    # --- the AdaptedModel view ---

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        """The stored (prepared) config of every adapter, by name."""
        return state.model_configs(self.model)

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active)

    @property
    def active_adapter(self) -> str | list[str]:
        active = self.active_adapters
        return active[0] if len(active) == 1 else active

    def adapter_module(self, adapter_name: str) -> nn.Module:
        """The model-level adapter of ``adapter_name`` (``KeyError`` if the method has none)."""
        if adapter_name not in self.adapter_modules:
            raise KeyError(adapter_name)
        module: nn.Module = self.adapter_modules[adapter_name]
        return module

    def add_adapter_module(self, adapter_name: str, module: nn.Module) -> None:
        self.adapter_modules[adapter_name] = module

    def remove_adapter_module(self, adapter_name: str) -> None:
        if adapter_name in self.adapter_modules:
            del self.adapter_modules[adapter_name]

    @property
    def tuner(self) -> BaseTuner:
        """The method of this model's adapters (one per model)."""
        configs = list(self.peft_config.values())
        if not configs:
            raise PeftError("the model holds no adapter")
        if self._tuner is None or not isinstance(configs[0], self._tuner.config_class):
            self._tuner = registry.new_tuner(configs[0])
        return self._tuner

    @property
    def prefix(self) -> str:
        """The adapter parameters' name prefix of this model's method (``"lora_"``), as the incumbent's tuners."""
        return type(self.tuner).prefix

    # --- adapters ---

    def inject_adapter(
        self, config: PeftConfig, adapter_name: str, autocast_adapter_dtype: bool = True, loading: bool = False
    ) -> PeftConfig:
        """Add an adapter (made active if it is the first); returns its stored config."""
        with loading_every_tensor(loading):
            prepared = inject(
                self.model, config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype, holder=self
            )
        self._adapters_changed()
        if not self._active:
            self._active = [adapter_name]
        state.set_active_adapters(self.model, self._active)
        return prepared

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Make these adapters active (trainability is not changed)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise AdapterNotFoundError(f"unknown adapters {unknown}; this model has {list(self.peft_config)}")
        if len(names) > 1 and not self.tuner.targets_modules:
            raise PeftError(f"{self.tuner.name} uses one adapter at a time; got {names}")
        state.set_active_adapters(self.model, names)
        self._active = names

    def update_and_allocate(self, global_step: int) -> None:
        """The tuner's ``on_step_end``, under Hugging Face PEFT's name and place
        (``model.base_model.update_and_allocate(step)``); ``PeftModel.update_and_allocate`` is the same."""
        if "on_step_end" in self.model_hooks:
            self.tuner.on_step_end(self, global_step)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; if it was the only active one, the first remaining becomes active."""
        if adapter_name not in self.peft_config:
            raise AdapterNotFoundError(f"unknown adapter {adapter_name!r}; this model has {list(self.peft_config)}")
        active = [n for n in self._active if n != adapter_name]
        state.delete_adapter(self.model, adapter_name)
        self.remove_adapter_module(adapter_name)
        if not active and self.peft_config:
            active = [next(iter(self.peft_config))]
        self._active = active
        state.set_active_adapters(self.model, active)
        self._adapters_changed()

    @contextmanager
    def disabled_adapters(self) -> Iterator[None]:
        """Inside the block the model computes its base outputs; nothing else changes."""
        if any(layer.merged for _, layer in adapter_layers(self.model)):
            raise MergeError("adapters are merged into the weights; call unmerge_adapter() before disabling them")
        previous = self.disabled
        self.disabled = True
        state.set_disabled(self.model, True)
        try:
            yield
        finally:
            self.disabled = previous
            state.set_disabled(self.model, previous)

    def enable_adapter_layers(self) -> None:
        """Switch adapters back on (Hugging Face PEFT's name)."""
        self.disabled = False
        state.set_disabled(self.model, False)

    def disable_adapter_layers(self) -> None:
        """Switch adapters off until ``enable_adapter_layers`` (Hugging Face PEFT's name)."""
        if any(layer.merged for _, layer in adapter_layers(self.model)):
            raise MergeError("adapters are merged into the weights; call unmerge_adapter() before disabling them")
        self.disabled = True
        state.set_disabled(self.model, True)

    # --- merging ---

    def _check_model_level_merge(self) -> None:
        if self.adapter_modules and not type(self.tuner).capabilities.mergeable:
            raise MergeError(
                f"{self.tuner.name} adapters change the model's inputs and cannot be merged into its weights"
            )

    def merge_adapter(
        self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False, exact_unmerge: bool = True
    ) -> None:
        self._check_model_level_merge()
        merging.merge(self.model, adapter_names, safe_merge, exact_unmerge)

    def unmerge_adapter(self) -> None:
        merging.unmerge(self.model)

    def unload_adapters(self, merge: bool, adapter_names: Sequence[str] | None = None, safe: bool = False) -> nn.Module:
        """The user's model without adapter layers (merged first if ``merge``); this holder is emptied."""
        if merge:
            self._check_model_level_merge()
        model = merging.unload(self.model, merge, adapter_names, safe)
        self.model.__dict__.pop(state.CONFIGS_ATTRIBUTE, None)
        self.adapter_modules = nn.ModuleDict()
        self._active = []
        self._adapters_changed()
        return model

    # --- checkpoints ---

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        """The adapter's live tensors under their checkpoint keys (the tuner decides them)."""
        if adapter_name not in self.peft_config:
            raise PeftError(f"the model has no adapter {adapter_name!r}; it has {sorted(self.peft_config)}")
        return self.tuner.adapter_state_dict(self, adapter_name)

    def tensors_to_save(self, adapter_name: str, tensors: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """What a save writes (the tuner's ``tensors_to_save``), from ``tensors`` gathered by the
        caller or from the live adapter."""
        if adapter_name not in self.peft_config:
            raise PeftError(f"the model has no adapter {adapter_name!r}; it has {sorted(self.peft_config)}")
        if tensors is None:
            refuse_ungathered(self.adapter_parameters(adapter_name), adapter_name, saving=True)
        return self.tuner.tensors_to_save(self, adapter_name, tensors)

    def adapter_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        """Every parameter the adapter's tensors come from: its layers', its model-level module's,
        and the base tensors it trains (``extra_trainable_parameters``), each once."""
        found: dict[int, nn.Parameter] = {}
        for _, layer in adapter_layers(self.model):
            found.update((id(p), p) for p in layer.adapter_parameters(adapter_name))
        if adapter_name in self.adapter_modules:
            found.update((id(p), p) for p in self.adapter_modules[adapter_name].parameters())
        extra = self.tuner.extra_trainable_parameters(self.model, self.peft_config[adapter_name])
        found.update((id(p), p) for p in extra.values())
        return list(found.values())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside training wrappers: DDP/DataParallel/DeepSpeed (``.module``), FSDP1
    (``._fsdp_wrapped_module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        child = _WRAPPERS.get(type(model).__name__, "_orig_mod")
        inner = model._modules.get(child)
        if inner is None:
            return model
        model = inner


_WRAPPERS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "DeepSpeedEngine": "module",
    "FullyShardedDataParallel": "_fsdp_wrapped_module",
}


def view_of(model: nn.Module) -> TunedModel:
    """A ``TunedModel`` for ``model``: itself, a ``PeftModel``'s ``base_model``, or a temporary view
    of a plain module with injected adapters (``inject_adapter_in_model``); training wrappers
    around any of them are looked through."""
    model = unwrap_model(model)
    if isinstance(model, TunedModel):
        return model
    base_model = model._modules.get("base_model")
    if isinstance(base_model, TunedModel):
        return base_model
    view = TunedModel(model)
    view._active = state.active_adapter_names(model)
    return view


def refuse_adapted(model: nn.Module) -> None:
    """Refuse to wrap a model that already holds adapters, saying why it holds them and what to do."""
    if isinstance(model._modules.get("base_model"), TunedModel):
        raise PeftError(
            "the model is a PeftModel already; add another adapter with model.add_adapter(name, config) or "
            "model.load_adapter(path, adapter_name=name), or start again from model.unload()"
        )
    held = sorted(state.model_configs(model))
    if held:
        raise PeftError(
            f"this model already holds the adapters {held}: get_peft_model and PeftModel.from_pretrained change the "
            "model you pass in place (it is the one inside the PeftModel they returned). Load into a fresh base "
            "model, add to the PeftModel you have (peft_model.load_adapter(path, adapter_name=...)), or call "
            "peft_model.unload() first"
        )
