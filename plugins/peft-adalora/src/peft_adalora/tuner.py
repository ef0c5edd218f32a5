"""``AdaLoraTuner``: SVD-form layers, the orthogonality regulariser and the rank allocation hooks.

The tuner holds no state (the engine makes a new one whenever adapters change): the
importance averages live on the layers (``peft_adalora.importance``), the rank pattern in
the stored config, which ``on_step_end`` replaces with a copy when the pattern changes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import torch
from torch import Tensor, nn

from peft_adalora.allocation import allocate
from peft_adalora.config import RANK_KEY, AdaLoraConfig, rank_mask
from peft_adalora.layer import SVDLinear
from peft_adalora.regularizer import orthogonality_penalty
from peft_core.contract import (
    MODEL_PREFIX,
    AdaptedModel,
    AdapterLayer,
    AdapterSaveError,
    BaseTuner,
    ConfigError,
    PeftConfig,
    TargetNotFoundError,
    adapter_layers,
    describe_unmatched,
    is_conv1d,
    trained_biases,
    with_fan_in_fan_out,
)

#: Hugging Face PEFT's default ``target_modules`` for AdaLoRA, by transformers ``model_type``.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = json.loads(
    files("peft_adalora").joinpath("default_targets.json").read_text(encoding="utf-8")
)


def svd_layers(model: nn.Module, adapter_name: str) -> list[tuple[str, SVDLinear]]:
    """Every ``SVDLinear`` of ``model`` holding ``adapter_name``, with its path, in module order."""
    return [
        (path, layer)
        for path, layer in adapter_layers(model)
        if isinstance(layer, SVDLinear) and adapter_name in layer.adapter_configs
    ]


def _module_of_key(key: str) -> str | None:
    """The module path of a rank_pattern key (``<path>.lora_E``, or ``<path>.lora_E.<adapter>``)."""
    head, sep, tail = key.rpartition(f".{RANK_KEY}")
    if not sep or (tail and (not tail.startswith(".") or "." in tail[1:])):
        return None
    return head


class AdaLoraTuner(BaseTuner):
    """AdaLoRA on ``nn.Linear`` and transformers ``Conv1D``."""

    name = "adalora"
    prefix = "lora_"
    config_class = AdaLoraConfig
    default_target_modules = DEFAULT_TARGET_MODULES

    # --- configs and layers ---

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        """Check ``rank_pattern`` against the targets and ``init_r``; keys are stored as saved
        (``<path>.lora_E``, without an adapter name)."""
        assert isinstance(config, AdaLoraConfig)
        if config.rank_pattern is not None:
            pattern: dict[str, list[bool]] = {}
            unknown = []
            for key, mask in config.rank_pattern.items():
                path = _module_of_key(key)
                if path is None or path not in targets:
                    unknown.append(key)
                    continue
                if len(mask) != config.init_r:
                    raise ConfigError(
                        f"rank_pattern[{key!r}] has {len(mask)} entries, but init_r={config.init_r}: a pattern "
                        "marks each of the init_r triplets as kept or pruned; give init_r entries"
                    )
                pattern[f"{path}.{RANK_KEY}"] = list(mask)
            if unknown:
                keys = [f"{t}.{RANK_KEY}" for t in targets]
                raise TargetNotFoundError(describe_unmatched("rank_pattern", unknown, keys))
            config = config.model_copy(update={"rank_pattern": pattern})
        return with_fan_in_fan_out(model, config, targets)

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        # Narrow rank_pattern to this module: the layer builds only the surviving triplets.
        assert isinstance(config, AdaLoraConfig)
        if not config.rank_pattern:
            return config
        mask = rank_mask(config.rank_pattern, module_path)
        pattern = {f"{module_path}.{RANK_KEY}": mask} if mask is not None else None
        return config.model_copy(update={"rank_pattern": pattern})

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        if isinstance(target, nn.Linear):
            return SVDLinear(target)
        if is_conv1d(target):
            return SVDLinear(target, fan_in_fan_out=True)
        return None

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        """Biases trained with ``bias="all"`` (every one) or ``"lora_only"`` (of adapted modules)."""
        assert isinstance(config, AdaLoraConfig)
        return trained_biases(model, config.bias, SVDLinear)

    # --- training hooks ---

    def _trained(self, model: AdaptedModel) -> list[tuple[str, AdaLoraConfig]]:
        """The active adapters that train (not ``inference_mode``), with their configs."""
        trained = []
        for name in model.active_adapters:
            config = model.peft_config[name]
            if isinstance(config, AdaLoraConfig) and not config.inference_mode:
                trained.append((name, config))
        return trained

    def adapter_loss(self, model: AdaptedModel, outputs: Any) -> Tensor | None:
        """``orth_reg_weight * R`` (``peft_adalora.regularizer``) of each active trained adapter, in training mode.

        The incumbent adds it in eval mode too (its evaluation losses include it); here an
        evaluation loss is the model's own.
        """
        if not model.model.training:
            return None
        total: Tensor | None = None
        for name, config in self._trained(model):
            if config.orth_reg_weight == 0:
                continue
            penalty = orthogonality_penalty([layer for _, layer in svd_layers(model.model, name)], name)
            if penalty is not None:
                term = config.orth_reg_weight * penalty
                total = term if total is None else total + term
        return total

    def on_step_end(self, model: AdaptedModel, global_step: int) -> None:
        """AdaLoRA's ``update_and_allocate(global_step)`` for every active trained adapter.

        ``global_step``: the index of the optimizer step just taken (0 for the first); call
        after ``optimizer.step()`` and before the gradients are cleared.
        """
        for name, config in self._trained(model):
            layers = svd_layers(model.model, name)
            pruned = [path for path, layer in layers if layer.r[name] != config.init_r]
            if pruned:
                warnings.warn(
                    f"adapter {name!r} was loaded with pruned ranks (rank_pattern, e.g. {pruned[0]!r}); its "
                    "allocation is over, so update_and_allocate leaves it as it is",
                    UserWarning,
                    stacklevel=4,
                )
                continue
            pattern = allocate(layers, name, config, global_step)
            if pattern is not None:
                # The one stored config, replaced by a copy: saving writes the new pattern.
                model.peft_config[name] = config.model_copy(update={"rank_pattern": pattern})

    # --- checkpoints ---

    def tensors_to_save(
        self, model: AdaptedModel, adapter_name: str, tensors: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """As the incumbent saves a pruned adapter: only the surviving triplets of each module.

        While training, the layers keep all ``init_r`` rows (pruned ones have ``E = 0``);
        with a ``rank_pattern`` the saved ``lora_A``/``lora_E`` rows and ``lora_B`` columns
        are those the pattern keeps, so the adapter reloads at its pruned ranks.
        """
        saved = super().tensors_to_save(model, adapter_name, tensors)
        config = model.peft_config[adapter_name]
        assert isinstance(config, AdaLoraConfig)
        if not config.rank_pattern:
            return saved
        for path, layer in svd_layers(model.model, adapter_name):
            mask = rank_mask(config.rank_pattern, path)
            rows = layer.r[adapter_name]
            if mask is None or rows == sum(mask):
                continue  # not in the pattern, or built at the pruned rank already
            if rows != len(mask):
                raise AdapterSaveError(
                    f"rank_pattern of adapter {adapter_name!r} has {len(mask)} entries for {path!r}, which holds "
                    f"{rows} triplets; the pattern must mark each triplet of the module"
                )
            prefix = f"{MODEL_PREFIX}{path}." if path else MODEL_PREFIX
            keep = torch.tensor(mask, dtype=torch.bool, device=saved[prefix + "lora_E"].device)
            for key, dim in (("lora_A", 0), ("lora_E", 0), ("lora_B", 1)):
                saved[prefix + key] = saved[prefix + key][keep] if dim == 0 else saved[prefix + key][:, keep]
        return saved
