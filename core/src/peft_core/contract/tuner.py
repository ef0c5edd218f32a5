"""``BaseTuner``: what a PEFT method supplies; the engine does the generic work around it.

A method overrides only what it needs:

- configs: ``prepare_config`` (the copy that is stored, saved and shown), ``resolve_config``
  (per-module values, e.g. ``rank_pattern``);
- module adapters: ``create_layer`` (a bare ``AdapterLayer`` for one target),
  ``extra_trainable_parameters`` (base tensors it trains, e.g. biases);
- model-level adapters and hooks, for methods that change what the model receives or
  computes: ``create_model_adapter``, ``prepare_inputs``, ``prepare_generate``,
  ``prepare_generation_inputs``, ``adapter_loss``, ``on_step_end`` (set
  ``targets_modules = False`` when the method wraps no module at all, like prompt tuning);
- checkpoints: ``adapter_state_dict`` (live tensors under the saved keys) and
  ``tensors_to_save``;
- ``weighted_adapter``, where combining adapters makes sense.

Targeting, module replacement, freezing, active/disabled state, transactional merges,
unloading, saving and loading are the engine's. The engine calls each method with a
config it owns (a tuner never sees, nor changes, the user's object).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import Tensor, nn

from peft_core.contract.capabilities import NONE, Capabilities
from peft_core.contract.layer import adapter_layers, key_paths
from peft_core.contract.matching import is_conv1d
from peft_core.errors import ConfigError, PeftError

if TYPE_CHECKING:
    from peft_core.contract.config import PeftConfig
    from peft_core.contract.layer import AdapterLayer

#: Checkpoint keys of module adapters start with this (``PeftModel.base_model.model``).
MODEL_PREFIX = "base_model.model."


class AdaptedModel(Protocol):
    """The view of an adapted model that model-level hooks receive (``PeftModel.base_model``)."""

    #: The user's model, with the module adapters injected.
    model: nn.Module

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        """The prepared config of every adapter, by name (the one stored copy)."""
        ...

    @property
    def active_adapters(self) -> list[str]:
        """The adapters in use, in order."""
        ...

    def adapter_module(self, adapter_name: str) -> nn.Module:
        """The module ``create_model_adapter`` returned for ``adapter_name``."""
        ...


class BaseTuner:
    """A PEFT method. Set ``name`` and ``config_class``; override what the method needs.

    Instances are made by the registry, which passes ``hooks``: the plugin manager's
    hook caller (``self.hooks.<hook name>(...)``), so a tuner can ask other plugins
    (peft-lora asks for variants) without importing the registry.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[PeftConfig]]
    #: False for methods that wrap no module (prompt learning): the engine then asks
    #: for no targets and ``config_class`` need not be a ``TargetedConfig``.
    targets_modules: ClassVar[bool] = True
    #: Capabilities of the model-level adapter (``create_model_adapter``); module
    #: adapters declare theirs on the layer classes. Never inherited.
    capabilities: ClassVar[Capabilities] = NONE
    #: Default ``target_modules`` by transformers ``model_type``, used when a config names
    #: none (e.g. ``{"llama": ["q_proj", "v_proj"]}``).
    default_target_modules: ClassVar[Mapping[str, Sequence[str]]] = {}
    #: The start of this method's adapter parameter names (LoRA: ``"lora_"``), as Hugging
    #: Face PEFT's tuners name it; its users read it as ``model.prefix`` to pick them out.
    prefix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capabilities" not in cls.__dict__:
            cls.capabilities = NONE

    def __init__(self, hooks: Any = None) -> None:
        self.hooks = hooks

    # --- configs ---

    def check_config(self, config: PeftConfig) -> None:
        """Raise ``ConfigError`` if this installation cannot run ``config`` at all (a variant flag
        whose plugin is missing, say). Called when a config is read from a checkpoint and
        before an adapter is added, without a model."""

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        """Return the config to store for ``model``: ``config`` itself or a changed copy.

        Called once per new adapter, after targeting (``targets``: the chosen module paths;
        empty for tuners without module targets), before any module is wrapped. Fill in
        what the model decides (``fan_in_fan_out`` on Conv1D, ``token_dim``), check the
        config against the targets (raise ``ConfigError``). ``config`` is the engine's own
        copy; return ``config.model_copy(update=...)`` for changes.
        """
        return config

    def extra_targets(self, model: nn.Module, config: PeftConfig) -> list[str]:
        """Paths of modules to wrap that ``target_modules`` does not name, in wrapping order.

        For methods that select targets another way (LoRA's ``target_parameters``: the
        modules owning those parameters). They are wrapped after the ``target_modules``
        targets, in this order (a module ``target_modules`` selects too is wrapped once, here);
        with some, an empty ``target_modules`` (or none, where the architecture has no
        defaults) is allowed. Default: none.
        """
        return []

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        """The config for one module (e.g. with a per-module rank); default: unchanged."""
        return config

    # --- module adapters ---

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        """A bare layer of this method wrapping ``target``, or None if the type is not supported.

        Called for each target no ``peft_adapter_layer`` plugin took; the engine adds
        ``adapter_name`` (``layer.add_adapter``) and puts the layer in ``target``'s place.
        None makes the injection fail with an error naming the module type.
        """
        return None

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        """Base parameters this config trains and saves besides the adapter (e.g. biases), by path in ``model``."""
        return {}

    # --- model-level adapters and hooks (``model`` is the ``AdaptedModel``) ---

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module | None:
        """A module owned by the adapter but not wrapping any model module (virtual tokens).

        Called once per new adapter with the user's model; the engine keeps the module
        (``AdaptedModel.adapter_module``), moves it with the model and trains it unless
        ``config.inference_mode``. Default: None.
        """
        return None

    def prepare_inputs(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Change what the model receives; called before every forward with adapters enabled.

        Return the new ``(args, kwargs)`` (prepend virtual tokens, extend
        ``attention_mask`` and ``labels``). Default: unchanged.
        """
        return args, kwargs

    def prepare_generate(
        self, model: AdaptedModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Change the arguments of ``generate`` itself; called once per ``generate`` call with adapters enabled.

        For what generation computes once, before its steps: an encoder-decoder model runs its
        encoder on these arguments (prompt tuning prepends virtual tokens to the encoder's
        input here). Return the new ``(args, kwargs)``. Default: unchanged.
        """
        return args, kwargs

    def prepare_generation_inputs(self, model: AdaptedModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Change the inputs of each ``generate`` step (what ``prepare_inputs_for_generation`` returned).

        Called inside ``generate`` for every step with adapters enabled, so it sees the
        KV cache (``past_key_values``); return the new keyword arguments. Default: unchanged.
        """
        return kwargs

    def adapter_loss(self, model: AdaptedModel, outputs: Any) -> Tensor | None:
        """A term added to ``outputs.loss`` after a forward that computed a loss (a regulariser).

        Called after every forward with adapters enabled whose output has a tensor
        ``loss``; decide yourself whether it applies (e.g. only in training). Default: None.
        """
        return None

    def on_step_end(self, model: AdaptedModel, global_step: int) -> None:
        """Called after each optimizer step: by ``PeftModel.update_and_allocate(global_step)``
        in a plain loop, and by ``PeftTrainer`` for you (AdaLoRA allocates ranks here)."""

    # --- checkpoints ---

    def adapter_state_dict(self, model: AdaptedModel, adapter_name: str) -> dict[str, Tensor]:
        """The adapter's live tensors (not copies) under their checkpoint keys.

        Saving writes these (see ``tensors_to_save``) and loading copies a checkpoint into
        them. Default: every adapter layer's tensors as ``base_model.model.<module
        path>.<key>`` (``modules_to_save`` copies under their modules' own names), the
        ``extra_trainable_parameters``, and a model-level adapter's ``state_dict`` keys.
        """
        config = model.peft_config[adapter_name]
        paths = key_paths(model.model)  # wrappers (FSDP1, checkpointing) add no key level
        tensors: dict[str, Tensor] = {}
        for _, layer in adapter_layers(model.model):
            prefix = MODEL_PREFIX + (f"{paths[id(layer)]}." if paths[id(layer)] else "")
            for key, tensor in layer.adapter_state_dict(adapter_name).items():
                tensors[prefix + key] = tensor
        for path, param in self.extra_trainable_parameters(model.model, config).items():
            owner, _, leaf = path.rpartition(".")
            owner_path = paths[id(model.model.get_submodule(owner))]
            tensors[MODEL_PREFIX + (f"{owner_path}.{leaf}" if owner_path else leaf)] = param
        try:
            module = model.adapter_module(adapter_name)
        except KeyError:
            return tensors
        tensors.update(module.state_dict(keep_vars=True))
        return tensors

    def tensors_to_save(
        self, model: AdaptedModel, adapter_name: str, tensors: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """What ``save_pretrained`` writes: ``tensors`` (default: ``adapter_state_dict``), detached.

        ``tensors`` are the adapter's tensors under their checkpoint keys when the caller has
        gathered them (from a sharded model, or a state dict Trainer collected). Override when
        the saved form is computed from them (p-tuning saves its encoder's output; AdaLoRA
        keeps the ranks that survived pruning); compute from ``tensors``, not the live ones.
        """
        source = self.adapter_state_dict(model, adapter_name) if tensors is None else tensors
        return {key: tensor.detach() for key, tensor in source.items()}

    def relative_to_initial(
        self,
        model: AdaptedModel,
        adapter_name: str,
        tensors: Mapping[str, Tensor],
        initial_config: PeftConfig,
        initial_tensors: Mapping[str, Tensor],
    ) -> tuple[PeftConfig, dict[str, Tensor]]:
        """The adapter as a change of the model it started from, for initialisations that rewrote base weights.

        ``save_pretrained(dir, path_initial_model_for_weight_conversion=initial)`` writes
        what this returns: ``tensors`` (as ``tensors_to_save`` gave them) and the adapter
        saved in ``initial`` before training (read for you) become an adapter that loads
        onto the original base model (LoRA's PiSSA/OLoRA: ``W_res + s B A - W = s (B A -
        B0 A0)``). Default: refused.
        """
        raise PeftError(
            f"{self.name} adapters have no weight conversion relative to an initial adapter "
            "(path_initial_model_for_weight_conversion); save without it"
        )

    # --- combining ---

    def weighted_adapter(
        self,
        model: AdaptedModel,
        adapters: Sequence[str],
        weights: Sequence[float],
        combination_type: str | None,
        **options: Any,
    ) -> tuple[PeftConfig, dict[str, Tensor]]:
        """A new adapter combining ``adapters`` with ``weights``: its config and its tensors
        under their checkpoint keys (as ``adapter_state_dict`` names them).
        ``combination_type`` None means the method's default.

        Only math: the engine checks that every layer involved declares ``weighted``, then
        adds the adapter from the config and copies the tensors in (all or nothing).
        ``options`` are the caller's extra keyword arguments (``svd_rank=``, ``density=``).
        """
        raise PeftError(f"{self.name} adapters cannot be combined with add_weighted_adapter")


def base_of(module: nn.Module) -> nn.Module:
    """The module an adapter layer wraps, or ``module`` itself."""
    from_layer = getattr(module, "base_layer", None)
    return from_layer if isinstance(module, nn.Module) and isinstance(from_layer, nn.Module) else module


def with_fan_in_fan_out(model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
    """``config`` with its ``fan_in_fan_out`` fitting the targets (for ``prepare_config``).

    True, with a warning, when the targets include transformers ``Conv1D`` layers (their
    weight is stored (in, out)); a ``ConfigError`` when it is set but no target is one.
    """
    uses_conv1d = any(is_conv1d(base_of(model.get_submodule(path))) for path in targets)
    wanted = bool(getattr(config, "fan_in_fan_out", False))
    if uses_conv1d and not wanted:
        warnings.warn("targets include transformers Conv1D layers: setting fan_in_fan_out=True", stacklevel=4)
        return config.model_copy(update={"fan_in_fan_out": True})
    if wanted and not uses_conv1d:
        raise ConfigError("fan_in_fan_out=True, but no target stores its weight as (in, out) (Conv1D); set it False")
    return config
