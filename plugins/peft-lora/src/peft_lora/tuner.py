"""``LoraTuner``: which layer wraps which module, per-module ranks, trained biases, variants."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from peft_core.contract import (
    AdaptedModel,
    AdapterLayer,
    BaseTuner,
    ConfigError,
    PeftConfig,
    TargetNotFoundError,
    describe_unmatched,
    is_conv1d,
    matching_entry,
    trained_biases,
    weights_will_be_loaded,
    with_fan_in_fan_out,
)
from peft_lora.config import LoraConfig
from peft_lora.conv import Conv, is_supported_conv
from peft_lora.defaults import DEFAULT_TARGET_MODULES
from peft_lora.embedding import Embedding
from peft_lora.grouped_conv import GroupedConv, check_grouped_targets, is_grouped_conv
from peft_lora.initial_conversion import check_initial_config, relative_to_initial
from peft_lora.layer import Linear, LoraLayer
from peft_lora.lora_bias import check_bias_targets
from peft_lora.mha import MultiheadAttention, check_mha_targets
from peft_lora.parameter import ParameterLora, parameter_targets, parameters_for
from peft_lora.residual_init import check_targets, pissa_iterations
from peft_lora.token_targets import TokenTarget, token_targets
from peft_lora.trainable_tokens import TiedTokens, TrainableTokens
from peft_lora.variant import LoraVariant
from peft_lora.weight_tying import TiedLoraLinear, tied_heads
from peft_lora.weighted import weighted_adapter


class LoraTuner(BaseTuner):
    """LoRA for Linear, transformers Conv1D, Embedding, Conv1d/2d/3d (grouped too) and nn.MultiheadAttention.

    A config with a variant flag (``use_dora``) gets its layers from the plugin that
    answers ``peft_lora_variant`` for it.
    """

    name = "lora"
    prefix = "lora_"
    config_class = LoraConfig
    default_target_modules = DEFAULT_TARGET_MODULES

    def __init__(self, hooks: Any = None) -> None:
        super().__init__(hooks)
        # trainable_token_indices of the adapter being added (extra_targets -> create_layer)
        self._tokens: dict[str, TokenTarget] = {}
        self._token_modules: dict[int, str] = {}
        self._token_layers: dict[str, TrainableTokens] = {}
        # ensure_weight_tying: tied head module -> its embedding module; the layers made, by module
        self._tie_sources: dict[int, int] = {}
        self._made: dict[int, AdapterLayer] = {}

    def check_config(self, config: PeftConfig) -> None:
        assert isinstance(config, LoraConfig)
        self.variant(config)  # a variant flag without its plugin fails here, before anything changes

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        assert isinstance(config, LoraConfig)
        for field in ("rank_pattern", "alpha_pattern"):
            keys = getattr(config, field)
            missing = [key for key in keys if not any(matching_entry(path, [key]) for path in targets)]
            if missing:
                raise TargetNotFoundError(describe_unmatched(field, missing, targets))
        prepared = with_fan_in_fan_out(model, config, targets)
        assert isinstance(prepared, LoraConfig)
        resolved = {path: self.resolve_config(prepared, path) for path in targets}
        lora_configs = {path: c for path, c in resolved.items() if isinstance(c, LoraConfig)}
        check_mha_targets(model, lora_configs)
        check_grouped_targets(model, lora_configs)
        check_targets(model, lora_configs)
        check_bias_targets(model, lora_configs)
        init = prepared.init_lora_weights
        if weights_will_be_loaded() and isinstance(init, str) and pissa_iterations(init) is not None:
            warnings.warn(
                f"this adapter was trained with init_lora_weights={init!r}: loading splits the base weights again "
                "with a randomized SVD, so the base differs from the one it was trained on (in Hugging Face PEFT "
                "too) and outputs differ from the trained model's. Save such adapters with save_pretrained(..., "
                "path_initial_model_for_weight_conversion=...) (a plain LoRA), or train with 'pissa'",
                UserWarning,
                stacklevel=2,
            )
        return prepared

    def variant(self, config: LoraConfig) -> LoraVariant | None:
        """The plugin variant for ``config``'s flags; None for plain LoRA; an error if none is installed."""
        flags = [flag for flag in config.variant_flags if getattr(config, flag)]
        if not flags:
            return None
        found = self.hooks.peft_lora_variant(config=config) if self.hooks is not None else None
        if found is None:
            needed = sorted({config.variant_flags[flag] for flag in flags})
            raise ConfigError(
                f"LoraConfig sets {', '.join(f'{flag}=True' for flag in flags)}, a LoRA variant that the "
                f"{' and '.join(needed)} plugin provides, which is not installed: pip install {' '.join(needed)}"
            )
        return found  # type: ignore[no-any-return]

    def extra_targets(self, model: nn.Module, config: PeftConfig) -> list[str]:
        """The modules owning ``target_parameters`` (``ParameterLora``), then the ``trainable_token_indices``
        layers (``TrainableTokens``, and ``TiedTokens`` on heads sharing their weight)."""
        assert isinstance(config, LoraConfig)
        self._tokens = token_targets(model, config)
        self._token_modules = {id(model.get_submodule(path)): path for path in self._tokens}
        self._token_layers = {}
        tying, heads = tied_heads(model, config)
        self._tie_sources = {id(model.get_submodule(h)): id(model.get_submodule(e)) for h, e in heads.items()}
        self._made = {}
        for embedding_path in set(heads.values()):  # a previous adapter's LoRA embedding
            existing = model.get_submodule(embedding_path)
            if isinstance(existing, AdapterLayer):
                self._made[id(existing)] = existing
        return parameter_targets(model, config) + list(self._tokens) + tying

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        assert isinstance(config, LoraConfig)
        token_path = self._token_modules.get(id(target))
        if token_path is not None:
            return self._token_layer(token_path, target)
        if id(target) in self._tie_sources:
            source = self._made.get(self._tie_sources[id(target)])
            if not isinstance(source, Embedding):
                raise ConfigError("ensure_weight_tying: the input embedding tied to this head holds no LoRA Embedding")
            return TiedLoraLinear(target, source)
        layer = self._new_layer(target, config)
        if layer is not None:
            self._made[id(target)] = layer
        return layer

    def _new_layer(self, target: nn.Module, config: LoraConfig) -> AdapterLayer | None:
        owned = [n for n, _ in target.named_parameters(recurse=False) if n in (config.target_parameters or [])]
        if owned:  # target_parameters, resolved for this module, name parameters it owns
            return ParameterLora(target)
        if isinstance(target, nn.MultiheadAttention):
            why = (
                "Hugging Face PEFT refuses use_dora there, and its lora_bias biases there never train: the in_proj "
                "one is not applied, the out_proj one is added outside autograd"
            )
            _refuse_variants(config, "nn.MultiheadAttention", why)
            return MultiheadAttention(target)
        if is_grouped_conv(target):
            kind = f"grouped convolutions ({type(target).__name__} with groups > 1)"
            _refuse_variants(
                config,
                kind,
                "DoRA normalises W + ΔW per output channel, and this update is no grouped weight; Hugging Face "
                "PEFT takes that norm of a reshaped B A that is not the update",
                {"lora_bias"},
            )
            return GroupedConv(target)
        variant = self.variant(config)
        if variant is not None:
            return variant.create_layer(target, config)
        if isinstance(target, nn.Linear):
            return Linear(target)
        if is_conv1d(target):
            return Linear(target, fan_in_fan_out=True)
        if isinstance(target, nn.Embedding):
            return Embedding(target)
        if is_supported_conv(target):
            return Conv(target)
        return None

    def _token_layer(self, path: str, target: nn.Module) -> AdapterLayer:
        plan = self._tokens[path]
        if plan.tied_to is None:
            layer = self._token_layers[path] = TrainableTokens(target)
            return layer
        source = self._token_layers.get(plan.tied_to) or self._existing_tokens(plan.tied_to)
        return TiedTokens(target, source)

    def _existing_tokens(self, path: str) -> TrainableTokens:
        raise ConfigError(f"the embedding {path!r} tied to this head holds no trainable tokens of this adapter")

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        assert isinstance(config, LoraConfig)
        update: dict[str, Any] = {}
        if config.trainable_token_indices is not None:  # this module's rows, or none
            plan = self._tokens.get(module_path)
            update["trainable_token_indices"] = plan.indices if plan is not None else None
        if config.target_parameters:  # narrowed to this module's parameters (none: a target_modules target)
            update["target_parameters"] = parameters_for(module_path, None, config.target_parameters)
        rank_key = matching_entry(module_path, config.rank_pattern)
        if rank_key is not None:
            update["r"] = config.rank_pattern[rank_key]
        alpha_key = matching_entry(module_path, config.alpha_pattern)
        if alpha_key is not None:
            update["lora_alpha"] = config.alpha_pattern[alpha_key]
        return config.model_copy(update=update) if update else config

    def weighted_adapter(
        self,
        model: AdaptedModel,
        adapters: Sequence[str],
        weights: Sequence[float],
        combination_type: str | None,
        **options: Any,
    ) -> tuple[PeftConfig, dict[str, Tensor]]:
        """``svd`` (default), ``cat``, ``linear``, TIES, DARE, magnitude pruning: see ``peft_lora.weighted``."""
        known = set(inspect.signature(weighted_adapter).parameters) - {
            "model",
            "adapters",
            "weights",
            "combination_type",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"add_weighted_adapter got unknown options {unknown} for LoRA; its options: {sorted(known)}"
            )
        return weighted_adapter(model, adapters, weights, combination_type, **options)

    def relative_to_initial(
        self,
        model: AdaptedModel,
        adapter_name: str,
        tensors: Mapping[str, Tensor],
        initial_config: PeftConfig,
        initial_tensors: Mapping[str, Tensor],
    ) -> tuple[PeftConfig, dict[str, Tensor]]:
        """PiSSA/OLoRA as a plain LoRA of twice the rank on the original base: see ``peft_lora.initial_conversion``."""
        check_initial_config(initial_config)
        return relative_to_initial(model, adapter_name, tensors, initial_tensors)

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        assert isinstance(config, LoraConfig)
        return trained_biases(model, config.bias, LoraLayer)


def _refuse_variants(
    config: LoraConfig, kind: str, why: str, supported: frozenset[str] | set[str] = frozenset()
) -> None:
    """A ``ConfigError`` for variant flags (``use_dora``...) that LoRA on ``kind`` does not implement."""
    flags = [flag for flag in config.variant_flags if getattr(config, flag) and flag not in supported]
    if flags:
        raise ConfigError(
            f"LoRA on {kind} does not support {', '.join(f'{f}=True' for f in flags)} ({why}): set "
            f"{' and '.join(f'{f}=False' for f in flags)}, or leave those layers out of target_modules"
        )
