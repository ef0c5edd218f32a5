"""bitsandbytes layers as adapter layers see them: which kind, and the weight as floats.

``Linear4bit`` (nf4/fp4, optionally double-quantized) stores its weight packed, two
values per byte, as a ``(out * in / 2, 1)`` uint8 tensor; ``Linear8bitLt`` stores int8
with one scale per output row. An adapter layer needs the logical ``(out, in)`` weight
(shapes, DoRA's norms): ``dequantized_weight`` gives it, computed on each call (never
kept: keeping it would undo the memory saving).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import bitsandbytes as bnb
import torch
from bitsandbytes.functional import QuantState
from bitsandbytes.nn.modules import Int8Params, Linear4bit, Linear8bitLt, Params4bit
from torch import Tensor, nn

from peft_core.contract import AdapterLayer, MergeError


def bits_of(module: nn.Module) -> int | None:
    """4 or 8 for a bitsandbytes ``Linear4bit``/``Linear8bitLt`` (or subclass), else None."""
    if isinstance(module, Linear4bit):
        return 4
    if isinstance(module, Linear8bitLt):
        return 8
    return None


def dequantized_weight(module: nn.Module) -> Tensor:
    """The ``(out, in)`` weight of a bitsandbytes linear layer as floats (a new tensor, no grad).

    4-bit: in the dtype it was quantized from; 8-bit: fp32. On the meta device (a shape-only
    copy of the model), an empty tensor of that shape.
    """
    weight = module.weight
    assert isinstance(weight, Tensor)
    out_features, in_features = int(module.out_features), int(module.in_features)  # type: ignore[arg-type]
    if weight.device.type == "meta":
        return torch.empty(out_features, in_features, device="meta")
    with torch.no_grad():
        if isinstance(weight, Params4bit) and weight.quant_state is not None:
            return _dequantize_4bit(weight)
        if isinstance(weight, Int8Params) and weight.dtype == torch.int8:
            # The row scales move from the weight to the layer's state at its first call.
            scales = weight.SCB if weight.SCB is not None else getattr(getattr(module, "state", None), "SCB", None)
            assert isinstance(scales, Tensor), "an int8 weight without its row scales (SCB)"
            dense: Tensor = bnb.functional.int8_vectorwise_dequant(weight.data, scales)
            return dense
    return weight.detach()  # not quantized yet (bitsandbytes quantizes when moved to a device)


def _dequantize_4bit(weight: Params4bit) -> Tensor:
    """Dequantize a 4-bit weight in either of bitsandbytes' layouts.

    On CPUs with AVX512-BF16, bitsandbytes rewrites a 4-bit weight in place on its first
    inference call (eval mode, input without grad) into a CPU layout (``packing_format_for_cpu``:
    nibbles regrouped, block scales transposed to bf16). Read as the original layout those
    bytes are another matrix (0.1 off on a test layer); here they are unpacked first, on a
    copy of the state, into the weight the layer now computes with.
    """
    state = weight.quant_state
    assert state is not None
    data = weight.data
    if getattr(state, "packing_format_for_cpu", False):
        data, state = _unpacked(data, copy.copy(state))
    dense: Tensor = bnb.functional.dequantize_4bit(data, state)
    return dense


def _unpacked(data: Tensor, state: QuantState) -> tuple[Tensor, QuantState]:
    """The original layout of CPU-packed 4-bit ``data``; ``state`` is changed to match.

    bitsandbytes' own inverse leaves the block scales transposed when a row holds several
    blocks (its output is then another matrix: 0.16 off on a 128-wide test layer) and
    re-quantizes them for double quantization (the weight drifts a little with every
    pack/unpack cycle). Here the scales are put back in block order and kept plain: the
    bf16-rounded values the packed kernel used, so cycles are exact (at 4 bytes per block of
    64 weights instead of about 1 with double quantization).
    """
    state.absmax = state.absmax.T.reshape(-1).float()
    state.original_nested = False  # type: ignore[attr-defined]  # set by the packing
    return bnb.functional._convert_weight_packed_for_cpu_inverse(data, state)


def unpack_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
    """A forward pre-hook for bitsandbytes layers no adapter wraps: ``unpack_for_autograd`` when training."""
    if torch.is_grad_enabled() and module.training:
        unpack_for_autograd(module)


def unpack_for_autograd(module: nn.Module) -> None:
    """Give a 4-bit weight repacked for CPU inference its trainable layout back, in place.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight at its first inference
    call (eval mode, input without grad) for a kernel that has no backward: gradients then
    stop at the layer, so after one evaluation every adapter below it silently stops
    learning (Hugging Face PEFT: 8 of 12 LoRA tensors got no gradient in a test). Called
    before a forward that trains (see ``_unpacked``: the block scales stay bf16-rounded, as
    the packed kernel used them); the next inference call repacks, to the same bytes.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Params4bit) or weight.quant_state is None:
        return
    if not getattr(weight.quant_state, "packing_format_for_cpu", False):
        return
    weight.data, state = _unpacked(weight.data, weight.quant_state)
    weight.quant_state = state
    if getattr(weight, "module", None) is not None:
        weight.module.quant_state = state


class QuantizedWeight(AdapterLayer):
    """Put first in the bases of a layer class whose ``base_layer`` is a bitsandbytes linear layer.

    ``_weight()`` (what LoRA, DoRA and IA3 layers read the base weight's shape, device
    and values from) becomes the dequantized weight. Merging is refused with the reason:
    writing ``W + dW`` back re-quantizes it, which changes the layer by about as much as
    the first quantization did, and an unmerge cannot give the original bytes back.
    """

    def _weight(self) -> Tensor:
        return dequantized_weight(self.base_layer)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if torch.is_grad_enabled() and (self.training or x.requires_grad):
            unpack_for_autograd(self.base_layer)
        result: Tensor = super().forward(x, *args, **kwargs)
        return result

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        bits = bits_of(self.base_layer)
        raise MergeError(
            f"merging into a bitsandbytes {bits}-bit weight is refused: writing the merged weight back "
            "re-quantizes it (outputs move by about the quantization error, see docs/quantization.md) and "
            "an unmerge could not restore it. Keep the adapter unmerged on the quantized model, or merge on "
            "the base model loaded unquantized (torch_dtype=torch.bfloat16 or float32, then "
            "PeftModel.from_pretrained(base, adapter_dir).merge_and_unload())"
        )
