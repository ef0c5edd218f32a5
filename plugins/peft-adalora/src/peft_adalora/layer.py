"""``SVDLinear``: AdaLoRA's SVD-form adapter on ``nn.Linear`` and transformers ``Conv1D``.

The update of one adapter is ``scale * B diag(E) A`` with ``A`` (r, in), ``E`` (r, 1) and
``B`` (out, r), ``scale = lora_alpha / (ranknum + 1e-5)``; ``ranknum`` is the initial rank
``init_r`` and stays so when triplets are pruned (their ``E`` is zero), as in the
incumbent. Checkpoint keys and shapes are the incumbent's: ``lora_A``, ``lora_E``,
``lora_B`` (no ``.weight``: they are parameters, not modules); ``ranknum`` is not saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from peft_adalora.config import AdaLoraConfig
from peft_adalora.importance import ImportanceState
from peft_adalora.ops import add_svd_update
from peft_core.contract import (
    AdapterLayer,
    Capabilities,
    weights_will_be_loaded,
)


class SVDLinear(AdapterLayer):
    """AdaLoRA on ``nn.Linear`` (weight (out, in)) or ``Conv1D`` (weight (in, out): ``fan_in_fan_out``).

    Rank bookkeeping per adapter, as the incumbent keeps it: ``r`` (the rows this layer
    holds: ``init_r``, or the surviving count when built from a ``rank_pattern``),
    ``ranknum`` (``init_r``, the divisor of the scale) and ``scaling`` (``lora_alpha``, or
    ``r`` when ``lora_alpha <= 0``). AdaLoRA's training state (importance averages) lives
    in ``adalora_state`` beside the adapter: see ``peft_adalora.importance``.
    """

    adapter_attribute_names = ("lora_A", "lora_E", "lora_B")
    # Exact merges (an additive low-rank update). Not per-row batches, not hotswap (a pruned
    # adapter has other shapes), not weighted combinations (no AdaLoRA-correct math).
    capabilities = Capabilities(mergeable=True)
    rank_dims: ClassVar[Mapping[str, int]] = {"lora_A": 0, "lora_E": 0, "lora_B": 1}

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        weight = self._weight()
        self.in_features, self.out_features = weight.shape if fan_in_fan_out else weight.shape[::-1]
        self.lora_A = nn.ParameterDict()
        self.lora_E = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.ranknum: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        #: Importance averages by adapter while it is trained (made by the first allocation).
        self.adalora_state = nn.ModuleDict()

    def _weight(self) -> Tensor:
        return self.base_layer.get_parameter("weight")

    def update_layer(self, adapter_name: str, config: AdaLoraConfig) -> None:  # type: ignore[override]
        # The tuner narrows rank_pattern to this module: a loaded pruned adapter has only the survivors.
        mask = next(iter(config.rank_pattern.values())) if config.rank_pattern else None
        r = sum(mask) if mask is not None else config.init_r
        self.r[adapter_name] = r
        self.ranknum[adapter_name] = float(config.init_r)
        self.scaling[adapter_name] = float(config.lora_alpha) if config.lora_alpha > 0 else float(r)
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        device = self._weight().device
        if weights_will_be_loaded():  # a checkpoint overwrites all three at once
            a, e, b = (torch.empty(shape, device=device) for shape in self._shapes(r))
        else:
            # The incumbent's draws in its order, on the CPU generator: the same seed gives the same adapter.
            a, e, b = (torch.randn(shape) for shape in self._shapes(r))
            torch.randn(1)  # the incumbent draws its ranknum tensor here (then overwrites it)
            if config.init_lora_weights:
                nn.init.zeros_(e)
                nn.init.normal_(a, mean=0.0, std=0.02)
                nn.init.normal_(b, mean=0.0, std=0.02)
            a, e, b = a.to(device), e.to(device), b.to(device)
        self.lora_A[adapter_name] = nn.Parameter(a)
        self.lora_E[adapter_name] = nn.Parameter(e)
        self.lora_B[adapter_name] = nn.Parameter(b)

    def _shapes(self, r: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (r, self.in_features), (r, 1), (self.out_features, r)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for bookkeeping in (self.r, self.ranknum, self.scaling):
            bookkeeping.pop(adapter_name, None)
        for container in (self.lora_dropout, self.adalora_state):
            if adapter_name in container:
                del container[adapter_name]

    def scale(self, adapter_name: str) -> float:
        """The factor of ``B diag(E) A``: ``scaling / (ranknum + 1e-5)``."""
        return self.scaling[adapter_name] / (self.ranknum[adapter_name] + 1e-5)

    def triplet(self, adapter_name: str) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """The adapter's ``A`` (r, in), ``E`` (r, 1) and ``B`` (out, r), live."""
        return self.lora_A[adapter_name], self.lora_E[adapter_name], self.lora_B[adapter_name]

    def importance(self, adapter_name: str) -> ImportanceState:
        """The adapter's training state on this layer (created, empty, on first use)."""
        if adapter_name not in self.adalora_state:
            self.adalora_state[adapter_name] = ImportanceState()
        state = self.adalora_state[adapter_name]
        assert isinstance(state, ImportanceState)
        return state

    def delta_weight(self, adapter_name: str) -> Tensor:
        """``scale * B diag(E) A`` in fp32, shaped like the base weight."""
        a, e, b = (t.float() for t in self.triplet(adapter_name))
        delta = (b @ (a * e)).mul_(self.scale(adapter_name))
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        # Rows flattened first: nn.Linear then returns a fresh 2-D tensor that the update can
        # be accumulated into in place, also under autograd.
        flat_x = x.reshape(-1, x.shape[-1])
        result: Tensor = self.base_layer(flat_x, *args, **kwargs)
        for name in self.active_adapters:
            a, e, b = self.triplet(name)
            dropped = self.lora_dropout[name](flat_x if flat_x.dtype == a.dtype else flat_x.to(a.dtype))
            result = add_svd_update(result, dropped, a, e, b, self.scale(name))  # + s x (A E)^T B^T
        return result.view(*x.shape[:-1], result.shape[-1])
