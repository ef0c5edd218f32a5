"""LoRA on grouped convolutions (``nn.Conv1d/2d/3d`` with ``groups > 1``), as Hugging Face PEFT builds it.

``y = conv(x) + s B(A(x))``: ``A`` is a full convolution in -> r (the base kernel, stride,
padding and dilation; it reads every input channel) and ``B`` a 1x1 convolution r -> out
with the base's ``groups``: output group ``g`` reads hidden channels ``g r/G .. (g+1) r/G``.
So ``r`` must be a multiple of ``groups``. Saved as there: ``lora_A.weight`` (r, in, k...),
``lora_B.weight`` (out, r/G, 1...), ``lora_B.bias`` with ``lora_bias``.

Not mergeable: the update reads every input channel, and a grouped weight
(out, in/G, k...) holds only its group's channels, so no base weight equals base plus
update (the incumbent refuses too). Per-row batches are supported (each row's adapter
runs on its rows); hotswap and weighted combination are refused (their rank padding and
concatenation would mix the groups of ``B``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, TypeGuard

import torch
from torch import Tensor, nn

from peft_core.contract import Capabilities, ConfigError, MergeError, PeftError, base_of
from peft_lora.config import LoraConfig
from peft_lora.conv import Conv

GROUPED_CAPABILITIES = Capabilities(per_row=True)


class GroupedConv(Conv):
    """LoRA on a grouped Conv1d/2d/3d: ``B`` is grouped like the base (see the module doc)."""

    capabilities = GROUPED_CAPABILITIES
    # B's bias is part of the grouped B convolution (nothing is merged), so no variant class is needed.
    variant_flags: ClassVar[frozenset[str]] = frozenset({"lora_bias"})

    def b_groups(self) -> int:
        groups = self.base_layer.groups
        assert isinstance(groups, int)
        return groups

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        check_rank(config, self.base_layer, "this layer")
        super().update_layer(adapter_name, config)

    def _unmergeable(self) -> MergeError:
        return MergeError(
            f"LoRA on a grouped convolution (groups={self.b_groups()}) cannot be merged: its update reads every input "
            "channel, which a grouped weight cannot hold (as in Hugging Face PEFT); keep the adapter unmerged"
        )

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        raise self._unmergeable()

    def delta_weight(self, adapter_name: str) -> Tensor:
        raise self._unmergeable()

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        raise PeftError(
            f"the factors of LoRA on a grouped convolution (groups={self.b_groups()}) are not one rank-r pair: B is "
            "grouped; hotswap, weighted combination and conversion do not apply"
        )


def is_grouped_conv(module: nn.Module) -> TypeGuard[nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    """A float Conv1d/2d/3d with ``groups > 1``."""
    return (
        isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        and module.groups > 1
        and torch.is_floating_point(module.weight)
    )


def check_rank(config: LoraConfig, module: nn.Module, path: str) -> None:
    """``r`` must be a multiple of the convolution's ``groups`` (B is grouped)."""
    groups = int(getattr(module, "groups", 1))
    if config.r % groups:
        raise ConfigError(
            f"r={config.r} for the grouped convolution {path} (groups={groups}): LoRA's B is grouped like the "
            f"layer, so r must be a multiple of {groups}; set r (or its rank_pattern entry) to a multiple of "
            f"{groups}, e.g. {groups * max(1, round(config.r / groups))}, or leave the layer out of target_modules"
        )


def check_grouped_targets(model: nn.Module, targets: Mapping[str, LoraConfig]) -> None:
    """Before anything changes: every grouped convolution target's rank fits its groups."""
    for path, config in targets.items():
        module = base_of(model.get_submodule(path))
        if is_grouped_conv(module) and not config.target_parameters:
            check_rank(config, module, repr(path))
