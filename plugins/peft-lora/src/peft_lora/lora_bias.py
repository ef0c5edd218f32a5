"""``lora_bias=True``: LoRA whose ``B`` carries a trained bias, a variant of LoRA's layers.

``h = W x + b + s (B A x + b_B)`` (``s`` the scaling). Saved as Hugging Face PEFT saves it,
``lora_B.bias``; merged into the base layer's bias (``b + s b_B``), so a base layer without
a bias cannot merge it. peft-lora provides this variant through its own
``peft_lora_variant`` hook, like any plugin would. Linear, transformers Conv1D and
Conv1d/2d/3d; not Embedding (as there).

Capabilities: merging (exact). Per-row batches, hotswap and weighted combination are not
declared (the bias is outside the factors those paths handle) and are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from peft_core.contract import Capabilities, ConfigError, Merge, MergeError, add_deltas, base_of, is_conv1d
from peft_lora.config import LoraConfig
from peft_lora.conv import Conv, is_supported_conv
from peft_lora.layer import Linear, LoraLayer
from peft_lora.variant import LoraVariant

BIAS_CAPABILITIES = Capabilities(mergeable=True)


class _BiasMerging(LoraLayer):
    """The bias part of merging, shared by the biased layers (no capabilities of its own)."""

    def _b_bias(self, adapter_name: str) -> Tensor | None:
        bias = self.get_submodule(f"lora_B.{adapter_name}").bias
        return bias if isinstance(bias, Tensor) else None

    def _bias_delta(self, adapter_names: Sequence[str]) -> list[Tensor]:
        found = [(n, self._b_bias(n)) for n in adapter_names]
        return [bias.float() * float(self.scaling[n]) for n, bias in found if bias is not None]

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        if self._bias_delta(adapter_names) and getattr(self.base_layer, "bias", None) is None:
            raise MergeError(
                f"adapters {list(adapter_names)} have lora_bias=True but the base layer has no bias to merge it into; "
                "keep them unmerged"
            )

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        merge = super().merged_weights(adapter_names)
        deltas = self._bias_delta(adapter_names)
        if deltas:
            merge.weights["bias"] = add_deltas(self.base_layer.get_parameter("bias"), deltas, 1.0)
        return merge

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        weights = super().unmerged_weights(adapter_names, state)
        deltas = self._bias_delta(adapter_names)
        if deltas:
            weights["bias"] = add_deltas(self.base_layer.get_parameter("bias"), deltas, -1.0)
        return weights


class BiasedLinear(_BiasMerging, Linear):
    """LoRA on Linear/Conv1D with ``lora_B.bias``: ``h = W x + b + s (B A x + b_B)``.

    (``Linear.update_layer`` builds ``B`` with the bias the config asks for; this class is
    the math that uses it.)
    """

    capabilities = BIAS_CAPABILITIES
    variant_flags: ClassVar[frozenset[str]] = frozenset({"lora_bias"})

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result = super().forward(x, *args, **kwargs)
        if not self.use_adapters:
            return result
        for name in self.active_adapters:
            bias = self._b_bias(name)
            if bias is not None:
                result = result + (bias * self.scaling[name]).to(result.dtype)
        return result


class BiasedConv(_BiasMerging, Conv):
    """LoRA on Conv1d/2d/3d whose 1x1 ``B`` convolution has a bias (the convolution adds it in the forward)."""

    capabilities = BIAS_CAPABILITIES
    variant_flags: ClassVar[frozenset[str]] = frozenset({"lora_bias"})


class LoraBiasVariant(LoraVariant):
    """Selected by ``lora_bias=True``: the biased layers above."""

    flags = ("lora_bias",)

    def create_layer(self, target: nn.Module, config: LoraConfig) -> LoraLayer | None:
        if isinstance(target, nn.Linear):
            return BiasedLinear(target)
        if is_conv1d(target):
            return BiasedLinear(target, fan_in_fan_out=True)
        if is_supported_conv(target):
            return BiasedConv(target)
        return None


def check_bias_targets(model: nn.Module, targets: Mapping[str, LoraConfig]) -> None:
    """Refuse ``lora_bias`` on embeddings before anything changes (the incumbent has no such layer)."""
    for path, config in targets.items():
        tokens = config.trainable_token_indices  # a trainable-tokens layer, not LoRA on the embedding
        if config.lora_bias and not tokens and isinstance(base_of(model.get_submodule(path)), nn.Embedding):
            raise ConfigError(
                f"lora_bias=True is not supported on Embedding layers such as {path!r} (as in Hugging Face PEFT); "
                "leave embeddings out of target_modules or set lora_bias=False"
            )
