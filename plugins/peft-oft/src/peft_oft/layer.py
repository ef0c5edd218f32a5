"""OFT layers: the input of nn.Linear / nn.Conv2d is rotated block by block, ``y = base(x R)``.

Checkpoint key ``oft_R.weight`` (blocks, b (b - 1) / 2) (blocks = 1 with ``block_share``),
as Hugging Face PEFT writes it. Per call, ``R`` comes from a cache keyed by the
parameter's version when no gradient is recorded (inference and generation compute each
rotation once per weight version, not once per call), and is computed afresh when
training (once per forward: a cached graph could not be reused by a second backward,
nor recomputed by activation checkpointing). Without gradients the rotation is folded
into the weight (``W Rᵀ``) when that is cheaper than rotating the input (fewer output
features than rows).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import AdapterLayer, Capabilities, Merge, PeftError, records_grad, weights_will_be_loaded
from peft_oft.config import OFTConfig
from peft_oft.rotation import Rotation, drop_blocks, rotate_rows, split_features


class OFTLayer(AdapterLayer):
    """Rotations by adapter name; the subclass says how an input is rotated."""

    adapter_attribute_names = ("oft_R",)
    #: Whether the output is rotated (embeddings: ``E[x] R``) rather than the input.
    rotates_output = False

    def __init__(self, base_layer: nn.Module, features: int) -> None:
        super().__init__(base_layer)
        self.features = features  # the rotated size: in_features, in_channels * k * k, or embedding_dim
        self.add_module(self.adapter_attribute_names[0], nn.ModuleDict())
        self._cache: dict[str, tuple[Hashable, Tensor]] = {}

    def rotation_module(self, adapter_name: str) -> Rotation:
        module = getattr(self, self.adapter_attribute_names[0])[adapter_name]
        assert isinstance(module, Rotation)
        return module

    def weight(self) -> Tensor:
        return self.base_layer.get_parameter("weight")

    def config(self, adapter_name: str) -> OFTConfig:
        config = self.adapter_configs[adapter_name]
        assert isinstance(config, OFTConfig)
        return config

    def update_layer(self, adapter_name: str, config: OFTConfig) -> None:  # type: ignore[override]
        blocks, size = split_features(self.features, config.r, config.oft_block_size)
        rotation = Rotation(1 if config.block_share else blocks, size, self.weight().device)
        if not weights_will_be_loaded():
            if config.init_weights:
                nn.init.zeros_(rotation.weight)
            else:
                nn.init.normal_(rotation.weight, mean=0.0, std=0.1)
        getattr(self, self.adapter_attribute_names[0])[adapter_name] = rotation
        self._cache.pop(adapter_name, None)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._cache.pop(adapter_name, None)

    def rotation(self, adapter_name: str) -> Tensor:
        """The adapter's ``R`` (blocks, b, b) for a forward.

        With ``coft`` the parameter is projected into COFT's ball. When training (gradients
        recorded for it) that is done in place, as Hugging Face PEFT does in every forward: a
        projected gradient step, so the stored values match its training. Otherwise the
        projection is only computed and nothing is written.
        """
        module, config = self.rotation_module(adapter_name), self.config(adapter_name)
        weight = module.weight
        neumann, terms = config.use_cayley_neumann, config.num_cayley_neumann_terms
        if records_grad(weight):
            if config.coft:
                with torch.no_grad():
                    projected = module.project(weight, config.eps)
                    if not torch.equal(projected, weight):  # changed only after an optimizer step
                        weight.copy_(projected)
            return module.cayley(weight, neumann, terms)
        key = (weight._version, weight.data_ptr(), weight.dtype, neumann, terms, config.coft and config.eps)
        cached = self._cache.get(adapter_name)
        if cached is None or cached[0] != key:
            cached = self._cache[adapter_name] = (key, self.merge_rotation(adapter_name))
        return cached[1]

    def _call_rotation(self, adapter_name: str) -> Tensor:
        """``rotation``, with module dropout's blocks replaced by identity in training."""
        r = self.rotation(adapter_name)
        p = self.config(adapter_name).module_dropout
        return drop_blocks(r, p) if self.training and p else r

    def merge_rotation(self, adapter_name: str) -> Tensor:
        """``R`` without gradients: no dropout, COFT's projection computed (nothing written)."""
        module, config = self.rotation_module(adapter_name), self.config(adapter_name)
        vec = module.weight.detach()
        if config.coft:
            vec = module.project(vec, config.eps)
        return module.cayley(vec, config.use_cayley_neumann, config.num_cayley_neumann_terms)

    # --- forward ---

    def rotate(self, x: Tensor, r: Tensor) -> Tensor:
        """``x`` (the base layer's input, in ``r``'s dtype) rotated by ``r``."""
        raise NotImplementedError

    def folds(self, x: Tensor) -> bool:
        """Whether ``base(x)`` with the weight ``W Rᵀ`` is cheaper than rotating ``x``."""
        return False

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, *args, **kwargs)
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        rotations = [self._call_rotation(name) for name in self.active_adapters]
        if not args and not kwargs and not records_grad(*rotations) and self.folds(x):
            weight = self.rotated_weight(rotations, inverse=False).to(x.dtype)
            return self.with_weight(x, weight)
        rotated = x
        for r in rotations:
            rotated = self.rotate(rotated.to(r.dtype), r)
        result: Tensor = self.base_layer(rotated.to(x.dtype), *args, **kwargs)
        return result.to(x.dtype)

    def with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _forward_rows(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Per-row adapters: the rows of each adapter rotated by it, one base call for the batch."""
        routing = self.row_routing
        assert routing is not None
        routing.check_rows(x.shape[0])
        names = list(self.adapter_configs)
        if self.training and any(self.config(n).module_dropout for n in names):
            raise PeftError("per-row adapters with module_dropout > 0 only run in eval mode: call model.eval()")
        index = routing.layer_index(names, x.device)
        rotated = x
        for position in routing.layer_used(names):
            rows = (index == position + 1).nonzero().flatten()
            r = self.rotation(names[position])
            rotated = rotated.index_copy(0, rows, self.rotate(x[rows].to(r.dtype), r).to(x.dtype))
        result: Tensor = self.base_layer(rotated, *args, **kwargs)
        return result

    # --- merging: W' = W R_nᵀ ... R_1ᵀ for rotations R_1 ... R_n of the input (E R_1 ... R_n of the output) ---

    def rotated_weight(self, rotations: Sequence[Tensor], inverse: bool, orthogonal: bool = False) -> Tensor:
        """The weight (fp32, or fp64 for fp64) with ``rotations`` folded in, or taken out (``inverse``).

        Taking out multiplies by the transposes when the rotations are orthogonal (exact
        Cayley) and by the blocks' inverses otherwise (the Neumann form is not exactly
        orthogonal), so that the engine's unmerge restores the weight to rounding.
        """
        weight = self.weight()
        flat = weight.reshape(weight.shape[0], -1).to(torch.promote_types(weight.dtype, torch.float32))
        steps = [r.to(flat.dtype) for r in rotations]
        steps = steps if self.rotates_output else [r.transpose(1, 2) for r in reversed(steps)]
        if inverse:
            steps = [m.transpose(1, 2) if orthogonal else torch.linalg.inv(m) for m in reversed(steps)]
        for m in steps:
            flat = rotate_rows(flat, m)
        return flat.reshape(weight.shape)

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        # The rotations are the undo state: an unmerge takes out what was folded in.
        rotations = [self.merge_rotation(name) for name in adapter_names]
        weight = self.rotated_weight(rotations, inverse=False).to(self.weight().dtype)
        exact = [not self.config(n).use_cayley_neumann for n in adapter_names]
        return Merge({"weight": weight}, state=(rotations, all(exact)))

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        if state is None:
            state = (
                [self.merge_rotation(n) for n in adapter_names],
                all(not self.config(n).use_cayley_neumann for n in adapter_names),
            )
        rotations, orthogonal = state
        return {"weight": self.rotated_weight(rotations, inverse=True, orthogonal=orthogonal).to(self.weight().dtype)}


class Linear(OFTLayer):
    """OFT on nn.Linear: ``y = (x R) Wᵀ + b``; merged, ``W' = W Rᵀ``."""

    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__(base_layer, base_layer.in_features)

    def rotate(self, x: Tensor, r: Tensor) -> Tensor:
        return rotate_rows(x.reshape(-1, x.shape[-1]), r).view(x.shape)

    def folds(self, x: Tensor) -> bool:
        return type(self.base_layer) is nn.Linear and x.numel() // x.shape[-1] > self.weight().shape[0]

    def with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight, self.base_layer.bias)  # type: ignore[arg-type]


class Conv2d(OFTLayer):
    """OFT on a 1x1 nn.Conv2d (groups 1): the input channels are rotated; merged, ``W' = W Rᵀ``."""

    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)

    def __init__(self, base_layer: nn.Conv2d) -> None:
        super().__init__(base_layer, base_layer.in_channels)

    def rotate(self, x: Tensor, r: Tensor) -> Tensor:
        # A grouped 1x1 convolution is the block-diagonal product over channels, without
        # moving the channels last.
        blocks = self.features // r.shape[-1]
        kernel = r.transpose(1, 2).expand(blocks, -1, -1).reshape(self.features, -1, 1, 1)
        return F.conv2d(x, kernel, groups=blocks)

    def folds(self, x: Tensor) -> bool:
        stride: tuple[int, int] = self.base_layer.stride  # type: ignore[assignment]
        positions = x.numel() // x.shape[1] // stride[0] // stride[1]
        return type(self.base_layer) is nn.Conv2d and positions > self.weight().shape[0]

    def with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.base_layer._conv_forward(x, weight, self.base_layer.bias)  # type: ignore[no-any-return, operator]


class PatchConv2d(OFTLayer):
    """OFT on an nn.Conv2d with a kernel > 1 (or groups > 1), computing what Hugging Face PEFT does.

    There, each k x k patch of the input (stride 1, no padding) is rotated as a vector of
    ``in_channels * k * k`` and the patches are written back with ``F.fold``, which sums
    overlapping patches after reordering them in memory: not a rotation of the kernel
    (a fresh adapter already changes the output). This class computes the same outputs,
    so that adapters trained there work here, and does not merge: no weight reproduces them.
    """

    capabilities = Capabilities(per_row=True, hotswap=True)

    def __init__(self, base_layer: nn.Conv2d) -> None:
        size = base_layer.kernel_size[0]
        super().__init__(base_layer, base_layer.in_channels * size * size)
        self.size = size

    def rotate(self, x: Tensor, r: Tensor) -> Tensor:
        n, channels, height, width = x.shape
        k = self.size
        patches = F.unfold(x, k)  # (n, c k k, positions): a column per patch
        size = r.shape[-1]
        rotated = torch.matmul(r.transpose(1, 2), patches.view(n, -1, size, patches.shape[-1]))  # R_iᵀ x_i
        # PEFT hands F.fold its rotated patches in another layout: per channel, the values of
        # (position, kernel offset) in that memory order, read as (kernel offset, position).
        scrambled = rotated.view(n, channels, k * k, -1).transpose(2, 3).reshape(n, self.features, -1)
        return F.fold(scrambled, (height, width), k)


class Embedding(OFTLayer):
    """OFT on nn.Embedding: each embedding is rotated, ``y = E[x] R``; merged, ``E' = E R``.

    Checkpoint key ``oft_embedding_R.weight``, as Hugging Face PEFT writes it.
    """

    adapter_attribute_names = ("oft_embedding_R",)
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)
    rotates_output = True

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer, base_layer.embedding_dim)

    def rotate(self, x: Tensor, r: Tensor) -> Tensor:
        return rotate_rows(x.reshape(-1, x.shape[-1]), r).view(x.shape)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            routing = self.row_routing
            routing.check_rows(x.shape[0])
            names = list(self.adapter_configs)
            index = routing.layer_index(names, x.device)
            rotated = result
            for position in routing.layer_used(names):
                rows = (index == position + 1).nonzero().flatten()
                r = self.rotation(names[position])
                rotated = rotated.index_copy(0, rows, self.rotate(result[rows].to(r.dtype), r).to(result.dtype))
            return rotated
        if not self.use_adapters:
            return result
        rotated = result
        for name in self.active_adapters:
            r = self._call_rotation(name)
            rotated = self.rotate(rotated.to(r.dtype), r)
        return rotated.to(result.dtype)
