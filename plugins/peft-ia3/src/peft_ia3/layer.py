"""IA3 layers: a learned vector rescales a layer's output, or its input (feed-forward)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import AdapterLayer, Capabilities, Merge, MergeError, StackCache, identities
from peft_ia3.config import IA3Config

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class IA3Layer(AdapterLayer):
    """One ``ia3_l`` per adapter; active adapters multiply.

    Shapes as in Hugging Face PEFT checkpoints: Linear/Conv1D ``(out, 1)`` for output
    scaling or ``(1, in)`` for input scaling; ConvNd ``(1, channels, 1, ...)``.
    """

    adapter_attribute_names = ("ia3_l",)
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True, weighted=True)

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        self.is_feedforward: dict[str, bool] = {}
        self.ia3_l = nn.ParameterDict()
        self._row_cache = StackCache[dict[bool, Tensor]]()

    def _weight(self) -> Tensor:
        return self.base_layer.get_parameter("weight")

    def _is_conv(self) -> bool:
        return isinstance(self.base_layer, _CONV)

    def _vector_shape(self, feedforward: bool) -> tuple[int, ...]:
        weight = self._weight()
        if isinstance(conv := self.base_layer, _CONV):
            # in_channels, not weight.shape[1]: a grouped conv's weight holds in_channels / groups.
            channels = conv.in_channels if feedforward else conv.out_channels
            return (1, channels) + (1,) * (weight.dim() - 2)
        out_features, in_features = weight.shape[::-1] if self.fan_in_fan_out else weight.shape
        return (1, in_features) if feedforward else (out_features, 1)

    def update_layer(self, adapter_name: str, config: IA3Config) -> None:  # type: ignore[override]
        # The tuner resolves feedforward_modules per module: non-empty means "this one".
        feedforward = bool(config.feedforward_modules)
        vector = torch.randn(self._vector_shape(feedforward), device=self._weight().device)
        if config.init_ia3_weights:
            vector.fill_(1.0)
        self.is_feedforward[adapter_name] = feedforward
        self.ia3_l[adapter_name] = nn.Parameter(vector)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._row_cache.clear()
        self.is_feedforward.pop(adapter_name, None)

    # --- scaling ---

    def _product(self, names: Sequence[str], feedforward: bool) -> Tensor | None:
        """Product of the selected vectors, flattened to one scale per channel (fp32)."""
        picked = [self.ia3_l[n].float().flatten() for n in names if self.is_feedforward[n] == feedforward]
        if not picked:
            return None
        product: Tensor = picked[0]
        for vector in picked[1:]:
            product = product * vector
        return product

    def _channel_view(self, scale: Tensor, x: Tensor) -> Tensor:
        """Put a per-channel scale where ``x``'s channels are (last dim; dim 1 for convolutions)."""
        if self._is_conv():
            return scale.view(-1, *([1] * (x.dim() - 2)))
        return scale

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, *args, **kwargs)
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        in_scale = self._product(self.active_adapters, feedforward=True)
        if in_scale is not None:
            x = (x * self._channel_view(in_scale, x)).to(x.dtype)
        result: Tensor = self.base_layer(x, *args, **kwargs)
        out_scale = self._product(self.active_adapters, feedforward=False)
        if out_scale is not None:
            result = (result * self._channel_view(out_scale, result)).to(result.dtype)
        return result

    def _forward_rows(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Per-row adapters: gather each row's vectors (ones for rows without one)."""
        routing = self.row_routing
        assert routing is not None
        routing.check_rows(x.shape[0])
        names = tuple(self.ia3_l.keys())
        index = routing.layer_index(names, x.device)
        scales = self._row_scales(names, routing.layer_used(names))
        if True in scales:
            x = (x * self._row_view(scales[True][index], x)).to(x.dtype)
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if False in scales:
            result = (result * self._row_view(scales[False][index], result)).to(result.dtype)
        return result

    def _row_scales(self, names: tuple[str, ...], used: list[int]) -> dict[bool, Tensor]:
        """Per kind (feedforward or not): (n + 1, C) fp32 scales by slot; slot 0 and the other kind's are ones."""

        def build() -> dict[bool, Tensor]:
            vectors = [self.ia3_l[n] if i in used else self.ia3_l[n].detach() for i, n in enumerate(names)]
            stacks: dict[bool, Tensor] = {}
            for feedforward in (True, False):
                picked = [
                    v.float().flatten() if self.is_feedforward[n] == feedforward else None
                    for n, v in zip(names, vectors, strict=True)
                ]
                size = next((v.numel() for v in picked if v is not None), None)
                if size is not None:
                    ones = torch.ones(size, device=vectors[0].device)
                    stacks[feedforward] = torch.stack([ones] + [v if v is not None else ones for v in picked])
            return stacks

        if torch.is_grad_enabled() and any(self.ia3_l[names[i]].requires_grad for i in used):
            return build()  # differentiable, fresh every call
        key = (names, identities(self.ia3_l._parameters.values()), tuple(self.is_feedforward[n] for n in names))
        return self._row_cache.get(key, used, lambda: [(self.ia3_l[n],) for n in names], build)

    def _row_view(self, scale: Tensor, x: Tensor) -> Tensor:
        """(batch, C) scales shaped to broadcast against ``x`` row by row."""
        if self._is_conv():
            return scale.view(scale.shape[0], -1, *([1] * (x.dim() - 2)))
        return scale.view(scale.shape[0], *([1] * (x.dim() - 2)), -1)

    # --- merging ---

    def _weight_scale(self, scale: Tensor, feedforward: bool) -> Tensor:
        """Shape a per-channel scale to multiply the weight (input or output channels)."""
        weight = self._weight()
        if isinstance(conv := self.base_layer, _CONV):
            kernel = [1] * (weight.dim() - 2)
            if not feedforward:
                return scale.view(-1, 1, *kernel)
            # weight is (out, in / groups, ...): output channel o of group g reads inputs g * in/groups + j.
            groups = conv.groups
            per_group = scale.view(groups, 1, -1).expand(groups, conv.out_channels // groups, -1)
            return per_group.reshape(conv.out_channels, -1, *kernel)
        along_rows = feedforward == self.fan_in_fan_out  # which weight dim holds the scaled channels
        return scale.view(-1, 1) if along_rows else scale.view(1, -1)

    def _scaled(self, scales: Mapping[bool, Tensor], invert: bool) -> dict[str, Tensor]:
        """The weight (and, for output scaling, the bias) times ``scales`` (by feedforward kind), or divided."""
        weight = self._weight()
        new_weight = weight.to(torch.promote_types(weight.dtype, torch.float32))  # fp64 stays fp64
        bias = getattr(self.base_layer, "bias", None)
        new_bias = bias.to(torch.promote_types(bias.dtype, torch.float32)) if isinstance(bias, Tensor) else None
        for feedforward, scale in scales.items():
            factor = 1 / scale if invert else scale
            new_weight = new_weight * self._weight_scale(factor, feedforward)
            if not feedforward and new_bias is not None:
                new_bias = new_bias * factor
        values = {"weight": new_weight.to(weight.dtype)}
        if new_bias is not None and bias is not None:
            values["bias"] = new_bias.to(bias.dtype)
        return values

    def _scales(self, names: Sequence[str]) -> dict[bool, Tensor]:
        found = {kind: self._product(names, kind) for kind in (True, False)}
        return {kind: scale.detach().clone() for kind, scale in found.items() if scale is not None}

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        if reversible:
            # Unmerge divides by the vector: a zero (or one whose reciprocal overflows) loses the weight.
            zero = [n for n in adapter_names if not (1 / self.ia3_l[n].float()).isfinite().all()]
            if zero:
                raise MergeError(
                    f"ia3_l of {zero} has zero entries: a merge could not be undone (unmerge divides by it). "
                    "Use merge_and_unload(), which needs no unmerge, or keep the adapter unmerged."
                )

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        # The scales are the undo state: an unmerge divides by what was multiplied in, even if
        # the vectors changed since (training, a load).
        scales = self._scales(adapter_names)
        return Merge(self._scaled(scales, invert=False), state=scales)

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        scales = state if state is not None else self._scales(adapter_names)
        return self._scaled(scales, invert=True)
