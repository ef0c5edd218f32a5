"""``target_parameters``: LoRA on bare ``nn.Parameter``s (mixture-of-experts weights), a LoRA layer.

The module owning a targeted parameter ``P`` is wrapped; its forward runs with
``P + s ΔP`` in place of ``P`` (``torch.func.functional_call``: the module is not touched).

- 2-D ``P`` (out, in): ``ΔP = B A`` with ``A`` (r, in), ``B`` (out, r).
- 3-D ``P`` (E experts, d1, d2): one rank-r pair per expert, stored as Hugging Face PEFT
  stores them: ``A`` (r E, d2) read as (E, r, d2) and ``B`` (d1, r E) read as (d1, r, E);
  ``ΔP[e] = B[:, :, e] A[e]``. A module with ``is_transposed = True`` holds (E, in, out)
  instead: ``A`` (r E, d1), ``B`` (d2, r E) and ``ΔP[e] = (B[:, :, e] A[e])^T``.

Several parameters of one module are held by one layer; the checkpoint names them as the
incumbent's nested wrappers do: the module's last targeted parameter ``lora_A.weight``,
the one before ``base_layer.lora_A.weight``, and so on. All adapters of a module must
target the same parameters. Merging is exact; no dropout, per-row batches, hotswap or
weighted combination (as there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from peft_core.contract import (
    ALL_LINEAR,
    AdapterLayer,
    Capabilities,
    ConfigError,
    Merge,
    MergeError,
    PeftError,
    TargetNotFoundError,
    add_deltas,
    describe_unmatched,
    is_linear,
    matches,
    unmatched_entries,
    weights_will_be_loaded,
)
from peft_lora.config import LoraConfig
from peft_lora.initialisation import factor_device, init_factors, round_like_base
from peft_lora.layer import Factor, LoraLayer, weight_of

PARAMETER_CAPABILITIES = Capabilities(mergeable=True)


def parameters_for(module_path: str, module: nn.Module | None, entries: Sequence[str]) -> list[str]:
    """Names of ``module``'s own parameters that ``entries`` (full-path suffixes) target, in its order.

    Without ``module`` (names unknown): each entry's last component whose module part fits the path.
    """
    if module is None:
        wanted = [
            e.rpartition(".")[2]
            for e in entries
            if not e.rpartition(".")[0] or matches(module_path, [e.rpartition(".")[0]])
        ]
        return list(dict.fromkeys(wanted))
    return [
        name
        for name, _ in module.named_parameters(recurse=False)
        if matches(f"{module_path}.{name}" if module_path else name, list(entries))
    ]


class ParameterLora(LoraLayer):
    """LoRA updates of parameters of ``base_layer`` (see the module doc); ``parameter_names`` in module order."""

    adapter_attribute_names = ("lora_A", "lora_B")
    capabilities = PARAMETER_CAPABILITIES
    rank_dims: ClassVar[Mapping[str, int]] = {}

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()  # adapter -> ModuleDict(parameter name -> A)
        self.lora_B = nn.ModuleDict()
        self.parameter_names: list[str] = []
        self.transposed = bool(getattr(base_layer, "is_transposed", False))

    def _geometry(self, name: str) -> tuple[int, int, int]:
        """(experts, in, out) of parameter ``name`` as the factors see it."""
        shape = self.base_layer.get_parameter(name).shape
        if len(shape) == 2:
            return 1, shape[1], shape[0]
        if len(shape) == 3:
            experts, first, second = shape
            return (experts, first, second) if self.transposed else (experts, second, first)
        raise ConfigError(
            f"target_parameters: {name!r} of {type(self.base_layer).__name__} has {len(shape)} dimensions; "
            "only 2-D (out, in) and 3-D (experts, ...) parameters can take LoRA"
        )

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        names = [n for n, _ in self.base_layer.named_parameters(recurse=False) if n in (config.target_parameters or [])]
        if self.parameter_names and names != self.parameter_names:
            raise ConfigError(
                f"adapter {adapter_name!r} targets parameters {names} of this module, another adapter "
                f"{self.parameter_names}; every adapter of a module must target the same parameters (target_parameters)"
            )
        self._set_hyperparameters(adapter_name, config)
        factors_a, factors_b = nn.ModuleDict(), nn.ModuleDict()
        loading = weights_will_be_loaded()
        for name in names:  # in module order: the incumbent's wrapping (and random) order
            param = self.base_layer.get_parameter(name)
            experts, in_features, out_features = self._geometry(name)
            device = param.device if loading else factor_device(param.device)
            lora_a = Factor(in_features, config.r * experts, device)
            lora_b = Factor(config.r * experts, out_features, device)
            if not loading:
                with torch.no_grad():
                    init_factors(weight_of(lora_a), weight_of(lora_b), config.init_lora_weights, config.r)
                round_like_base((weight_of(lora_a), weight_of(lora_b)), param.dtype)
            factors_a[name], factors_b[name] = lora_a, lora_b
        self.parameter_names = names
        self.lora_A[adapter_name] = factors_a
        self.lora_B[adapter_name] = factors_b

    @staticmethod
    def _factors(factors: nn.ModuleDict, adapter_name: str) -> nn.ModuleDict:
        """An adapter's factors by parameter name (a ModuleDict per adapter)."""
        return cast(nn.ModuleDict, factors[adapter_name])

    def update(self, adapter_name: str, name: str) -> Tensor:
        """``s ΔP`` of adapter ``adapter_name`` for parameter ``name``, fp32, ``P``'s shape."""
        a = weight_of(self._factors(self.lora_A, adapter_name)[name]).float()
        b = weight_of(self._factors(self.lora_B, adapter_name)[name]).float()
        scaling = self.scaling[adapter_name]
        experts = self._geometry(name)[0]
        if experts == 1:
            return (b @ a) * scaling
        per_expert_a = a.reshape(experts, -1, a.shape[-1])  # (E, r, in)
        per_expert_b = b.reshape(b.shape[0], -1, experts).permute(2, 0, 1)  # (E, out, r)
        delta = torch.bmm(per_expert_b, per_expert_a) * scaling  # (E, out, in)
        return delta.transpose(1, 2) if self.transposed else delta

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.use_adapters:
            return self.base_layer(*args, **kwargs)
        updated = {}
        for name in self.parameter_names:
            param = self.base_layer.get_parameter(name)
            adapters = [n for n in self.active_adapters if n in self.lora_A]
            total = sum((self.update(n, name) for n in adapters), torch.zeros((), device=param.device))
            updated[name] = param + total.to(param.dtype)
        return torch.func.functional_call(self.base_layer, updated, args, kwargs)

    # --- merging ---

    def delta_weight(self, adapter_name: str) -> Tensor:
        raise MergeError(f"{type(self).__name__} changes parameters {self.parameter_names}, not one 'weight'")

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge(self._with_updates(adapter_names, 1.0))

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return self._with_updates(adapter_names, -1.0)

    def _with_updates(self, adapter_names: Sequence[str], sign: float) -> dict[str, Tensor]:
        return {
            name: add_deltas(self.base_layer.get_parameter(name), [self.update(n, name) for n in adapter_names], sign)
            for name in self.parameter_names
        }

    # --- checkpoint keys: the incumbent's nesting ---

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        if adapter_name not in self.lora_A:
            return {}
        state: dict[str, Tensor] = {}
        depth = len(self.parameter_names)
        for position, name in enumerate(self.parameter_names):
            prefix = "base_layer." * (depth - 1 - position)
            state[f"{prefix}lora_A.weight"] = weight_of(self._factors(self.lora_A, adapter_name)[name])
            state[f"{prefix}lora_B.weight"] = weight_of(self._factors(self.lora_B, adapter_name)[name])
        return state

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        raise PeftError(f"{type(self).__name__} holds one pair of factors per parameter: {self.parameter_names}")

    def extra_repr(self) -> str:
        return f"parameters={self.parameter_names}, {super().extra_repr()}"


def parameter_targets(model: nn.Module, config: LoraConfig) -> list[str]:
    """The modules owning ``config.target_parameters``, in module order (every entry must match)."""
    if not config.target_parameters:
        return []
    found: list[str] = []
    matched: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, AdapterLayer) and not isinstance(module, ParameterLora):
            continue
        owner = module.base_layer if isinstance(module, ParameterLora) else module
        names = parameters_for(path, owner, config.target_parameters)
        if not names:
            continue
        if not path:
            raise ConfigError(
                f"target_parameters: {names} belong to the top-level model, which cannot be wrapped; target "
                "parameters of its submodules"
            )
        if selects(config.target_modules, path, owner):
            raise ConfigError(
                f"{path!r} is selected by target_modules and owns target_parameters {names}; a module takes one "
                "kind of LoRA: leave it out of target_modules (e.g. target_modules=[])"
            )
        found.append(path)
        matched.update(f"{path}.{name}" for name in names)
    missing = unmatched_entries(config.target_parameters, sorted(matched)) if matched else config.target_parameters
    if missing:
        names = [f"{p}.{n}" for p, m in model.named_modules() for n, _ in m.named_parameters(recurse=False) if p]
        raise TargetNotFoundError(describe_unmatched("target_parameters", missing, names))
    return [path for path in found if not any(path.startswith(other + ".") for other in found)]


def selects(target_modules: list[str] | str | None, path: str, module: nn.Module) -> bool:
    """Whether ``target_modules`` selects the module at ``path`` (the engine's rule, "all-linear" included)."""
    if not target_modules:
        return False
    if target_modules == ALL_LINEAR:
        return is_linear(module)
    return matches(path, target_modules)
