"""The layer LoHa and LoKr share: ``y = base(x) + x delta_Wᵀ`` (a convolution with ``delta W`` for convs).

A subclass says how its update is built: ``delta_weight`` (the full tensor, for merging and
as the fallback), ``factored`` (``x delta_Wᵀ`` without building ``delta W``, where the
structure allows it) and the costs of both. The forward picks, per call, the cheaper of

- *factored*: each adapter's own product through its factors (no weight-sized tensor);
- *folded*: ``base(x)`` run once with ``W + delta W`` (one product for all adapters; in
  training the backward then computes a full weight gradient, which the cost counts).

Linear layers take the one with fewer multiply-adds (measured on llama-tiny's shapes:
factored in training and for a few tokens, folded for long no-grad batches);
convolutions are always folded.

Hugging Face PEFT builds ``delta W`` and runs a second full product every call; both forms
here compute the same sum (fp32 rounding apart) and draw the dropouts' random numbers in
the same order, so a seeded training step matches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import AdapterLayer, PeftError, weights_will_be_loaded
from peft_lycoris.config import LycorisConfig

#: Base layers whose forward the folded form may replace (a subclass may do more in forward).
_PLAIN = (nn.Linear, nn.Conv1d, nn.Conv2d)


def kaiming_(*tensors: Tensor) -> None:
    """PyTorch's default init for a Linear weight (kaiming uniform, a = sqrt(5)), as the methods use."""
    for tensor in tensors:
        nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


class LycorisLayer(AdapterLayer):
    """nn.Linear, nn.Conv1d or nn.Conv2d with additive structured updates (the subclass's math)."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        weight = self.weight()
        self.out_features = weight.shape[0]
        self.fan_in = weight[0].numel()  # in / groups * prod(kernel): delta W is (out, fan_in)
        self.kernel = tuple(weight.shape[2:])
        self.is_conv = isinstance(base_layer, nn.Conv1d | nn.Conv2d)

    def weight(self) -> Tensor:
        return self.base_layer.get_parameter("weight")

    def new_parameter(self, *shape: int) -> nn.Parameter:
        """An uninitialised parameter on the base weight's device."""
        return nn.Parameter(torch.empty(shape, device=self.weight().device))

    # --- what a subclass supplies ---

    def create_parameters(self, adapter_name: str, config: LycorisConfig, init: bool) -> None:
        """Create the adapter's tensors in the containers; initialise them if ``init``."""
        raise NotImplementedError

    def factored(self, adapter_name: str, x: Tensor) -> Tensor | None:
        """``x delta_Wᵀ`` (conv: the convolution with ``delta W``) without building ``delta W``;
        None where this adapter has no such form. Includes the scaling."""
        return None

    def factored_cost(self, adapter_name: str) -> float | None:
        """Multiply-adds of ``factored`` per output position (token or pixel), or None."""
        return None

    def build_cost(self, adapter_name: str) -> float:
        """Multiply-adds of ``delta_weight``."""
        return float(self.out_features * self.fan_in)

    def rank_mask(self, adapter_name: str) -> Tensor:
        """Rank dropout: a (out,) factor per output row, drawn with ``torch.rand(out)`` (CPU).

        Kept rows are scaled by 1 / (kept share) unless the config has ``rank_dropout_scale``
        set False (LoKr's option; LoHa always rescales), as in Hugging Face PEFT.
        """
        config = self.config(adapter_name)
        kept = (torch.rand(self.out_features) > config.rank_dropout).float()
        if getattr(config, "rank_dropout_scale", True):
            kept /= kept.mean()
        return kept.to(self.weight().device)

    # --- adapters ---

    def update_layer(self, adapter_name: str, config: LycorisConfig) -> None:  # type: ignore[override]
        self.create_parameters(adapter_name, config, init=not weights_will_be_loaded())

    def config(self, adapter_name: str) -> LycorisConfig:
        config = self.adapter_configs[adapter_name]
        assert isinstance(config, LycorisConfig)
        return config

    # --- forward ---

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, *args, **kwargs)
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        drawn = self._draw_dropouts(self.active_adapters)
        if drawn and not args and not kwargs and self._fold(x, drawn):
            weight = self.weight() + sum(self._masked_delta(name, mask) for name, mask in drawn)
            return self.with_weight(x, weight).to(x.dtype)
        result: Tensor = self.base_layer(x, *args, **kwargs)
        for name, mask in drawn:
            result = result + self.masked(self.update_output(name, x), mask)
        return result.to(x.dtype)

    def _draw_dropouts(self, names: Sequence[str]) -> list[tuple[str, Tensor | None]]:
        """The adapters this call uses, each with its rank-dropout row factors (None: none).

        Training draws ``torch.rand(1)`` per adapter (module dropout), then ``torch.rand(out)``
        if it runs with rank dropout: Hugging Face PEFT's order, so that seeds agree.
        """
        drawn: list[tuple[str, Tensor | None]] = []
        for name in names:
            config = self.config(name)
            if not self.training:
                drawn.append((name, None))
            elif bool(torch.rand(1) > config.module_dropout):
                drawn.append((name, self.rank_mask(name) if config.rank_dropout else None))
        return drawn

    def _fold(self, x: Tensor, drawn: list[tuple[str, Tensor | None]]) -> bool:
        """Whether ``W + delta W`` in one product is cheaper than the updates' own products."""
        weight = self.weight()
        dtypes = {weight.dtype, x.dtype} | {p.dtype for n, _ in drawn for p in self.adapter_parameters(n)}
        if type(self.base_layer) not in _PLAIN or len(dtypes) > 1:
            return False  # the base runs its own forward, or in another dtype than the adapters
        if self.is_conv:
            # Measured (ConvNet, 3x3 and 1x1): the factored form's convolutions over few
            # channels run 1.5-4x slower than the base convolution plus a weight gradient.
            return True
        rows = x.numel() / x.shape[-1]
        trains = torch.is_grad_enabled() and any(p.requires_grad for n, _ in drawn for p in self.adapter_parameters(n))
        full = rows * self.out_features * self.fan_in  # one weight-sized product
        folded = sum(self.build_cost(n) for n, _ in drawn) + (full if trains else 0.0)
        apart = 0.0
        for name, _ in drawn:
            cost = self.factored_cost(name)
            apart += rows * cost if cost is not None else full + self.build_cost(name)
        return folded < (3.0 if trains else 1.0) * apart  # a backward costs about twice the forward

    def _masked_delta(self, adapter_name: str, mask: Tensor | None) -> Tensor:
        delta = self.delta_weight(adapter_name)
        return delta if mask is None else delta * mask.view(-1, *[1] * (delta.dim() - 1)).to(delta)

    def update_output(self, adapter_name: str, x: Tensor) -> Tensor:
        """``x delta_Wᵀ`` (conv: convolution), factored where the adapter allows it."""
        found = self.factored(adapter_name, x)
        if found is not None:
            return found
        delta = self.delta_weight(adapter_name)
        return self.with_weight(x.to(delta.dtype), delta, bias=False)

    def masked(self, output: Tensor, mask: Tensor | None) -> Tensor:
        """``output`` with its channels multiplied by a rank-dropout mask (channels: dim 1 for convs)."""
        if mask is None:
            return output
        shape = (-1, *[1] * (output.dim() - 2)) if self.is_conv else (-1,)
        return output * mask.to(output).view(shape)

    def with_weight(self, x: Tensor, weight: Tensor, bias: bool = True) -> Tensor:
        """The base layer's operation with another weight (and its bias unless ``bias=False``)."""
        base = self.base_layer
        b = base.bias if bias else None
        if isinstance(base, nn.Conv1d | nn.Conv2d):
            return base._conv_forward(x, weight, b)  # type: ignore[arg-type, no-any-return]
        return F.linear(x, weight, b)  # type: ignore[arg-type]

    def _forward_rows(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Per-row adapters: each adapter's update on the rows that use it, added in place of a loop over rows."""
        routing = self.row_routing
        assert routing is not None
        routing.check_rows(x.shape[0])
        names = list(self.adapter_configs)
        if self.training and any(self.config(n).rank_dropout or self.config(n).module_dropout for n in names):
            raise PeftError(
                "per-row adapters with rank_dropout or module_dropout > 0 only run in eval mode: call model.eval()"
            )
        result: Tensor = self.base_layer(x, *args, **kwargs)
        index = routing.layer_index(names, x.device)
        for position in routing.layer_used(names):
            rows = (index == position + 1).nonzero().flatten()
            delta = self.update_output(names[position], x[rows])
            result = result.index_add(0, rows, delta.to(result.dtype))
        return result.to(x.dtype)
