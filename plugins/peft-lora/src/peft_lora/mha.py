"""LoRA on ``nn.MultiheadAttention``: one low-rank update of ``in_proj_weight`` and one of ``out_proj.weight``.

PyTorch's attention reads ``in_proj_weight`` and ``out_proj.weight`` directly (it never
calls ``out_proj``), so no child module can be wrapped. The forward here runs the
untouched module with the updated weights passed in (``torch.func.functional_call``):

    W_in'  = W_in  + s B A                 A (r, E), B (3E, r)
    W_out' = W_out + 2 s B_o A_o          A_o (r, E), B_o (E, r)   (twice: see below)

Format and numbers are Hugging Face PEFT's (0.21): checkpoint keys ``lora_A.weight``,
``lora_B.weight``, ``base_layer.out_proj.lora_A.weight``, ``base_layer.out_proj.lora_B.weight``;
the same initial factors at the same seed. Where it differs, on purpose:

- It never writes the base weights during forward (the incumbent merges them before each
  call and unmerges after, re-registering parameters): base weights stay bit-exact, and a
  failing call cannot leave them merged.
- The ``out_proj`` update counts twice: the incumbent adds it twice, in forward and in
  merges (it writes ``W + ΔW``, then its wrapped ``out_proj`` merges ``ΔW`` again through
  ``.data``, unseen by autograd; huggingface/peft#3774 is the open fix). Its adapters were
  trained that way, so the same is computed here: the value ``W + 2 ΔW``, the gradient of
  ``W + ΔW`` (``incumbent_out_proj_update``). They load with the same outputs both ways,
  and training from the same seed takes the same steps.
- ``nn.TransformerEncoderLayer`` in eval mode (its weights frozen) takes a fused path that reads
  the attention's weights itself, skipping this layer's forward (the incumbent's adapter
  is then silently ignored); this layer keeps that path off (see ``_keeps_fused_path_off``).
- Targeting ``out_proj`` of an attention on its own is refused (``check_mha_targets``):
  its forward is never called, so the adapter would do nothing.

``lora_dropout`` is not applied (no input of the update is seen on its own; as in the
incumbent) and a training config with dropout gets a warning. Merging is exact; per-row
batches, hotswap and weighted combination are refused (the incumbent has none of them).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from peft_core.contract import (
    Capabilities,
    ConfigError,
    Merge,
    MergeError,
    PeftError,
    add_deltas,
    base_of,
    weights_will_be_loaded,
)
from peft_lora.config import LoraConfig
from peft_lora.initialisation import RANDOM_INITS, factor_device, incumbent_stream, init_factors, round_like_base
from peft_lora.layer import Factor, LoraLayer, weight_of

MHA_CAPABILITIES = Capabilities(mergeable=True)

OUT_PREFIX = "base_layer.out_proj."


def incumbent_out_proj_update(delta: Tensor) -> Tensor:
    """``2 ΔW`` in value, ``ΔW`` for autograd: the incumbent's ``out_proj`` update (see the module doc)."""
    return delta + delta.detach()


def _keeps_fused_path_off(module: nn.Module, args: tuple[Any, ...]) -> None:
    """A no-op forward pre-hook: ``nn.TransformerEncoderLayer`` takes its fused path only when no
    module inside it has hooks, and that path would read the base weights, not the adapted ones."""
    return None


class MultiheadAttention(LoraLayer):
    """LoRA on ``nn.MultiheadAttention`` with one projection for q, k and v (see the module doc)."""

    adapter_attribute_names = ("lora_A", "lora_B", "out_proj_lora_A", "out_proj_lora_B")
    capabilities = MHA_CAPABILITIES
    rank_dims: ClassVar[Mapping[str, int]] = {
        "lora_A.weight": 0,
        "lora_B.weight": 1,
        OUT_PREFIX + "lora_A.weight": 0,
        OUT_PREFIX + "lora_B.weight": 1,
    }

    def __init__(self, base_layer: nn.MultiheadAttention) -> None:
        if not base_layer._qkv_same_embed_dim:
            raise ConfigError(
                "LoRA on nn.MultiheadAttention needs one in_proj_weight for query, key and value (kdim and vdim "
                "equal to embed_dim); this one has separate q/k/v weights (kdim="
                f"{base_layer.kdim}, vdim={base_layer.vdim}, embed_dim={base_layer.embed_dim}), which Hugging Face "
                "PEFT does not support either: leave it out of target_modules"
            )
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.out_proj_lora_A = nn.ModuleDict()
        self.out_proj_lora_B = nn.ModuleDict()
        self.register_forward_pre_hook(_keeps_fused_path_off)

    @property
    def _attention(self) -> nn.MultiheadAttention:
        base = self.base_layer
        assert isinstance(base, nn.MultiheadAttention)
        return base

    # --- adapters ---

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        _check_init(config)
        if config.lora_dropout and not config.inference_mode:
            warnings.warn(
                f"lora_dropout={config.lora_dropout} is not applied on nn.MultiheadAttention layers (its weights "
                "are read directly, so the update never sees its input alone; the same in Hugging Face PEFT)",
                UserWarning,
                stacklevel=2,
            )
        first = not self.lora_A
        self._set_hyperparameters(adapter_name, config)
        attention = self._attention
        weight = attention.in_proj_weight
        loading = weights_will_be_loaded()
        device = weight.device if loading else factor_device(weight.device)
        embed = attention.embed_dim
        if first and incumbent_stream() and not loading:
            # The incumbent builds the out_proj pair when wrapping and again when adding the adapter.
            self._new_pair(embed, embed, config, device)
        self.lora_A[adapter_name], self.lora_B[adapter_name] = self._new_pair(embed, 3 * embed, config, device)
        pair = self._new_pair(embed, embed, config, device)
        self.out_proj_lora_A[adapter_name], self.out_proj_lora_B[adapter_name] = pair

    def _new_pair(
        self, in_features: int, out_features: int, config: LoraConfig, device: torch.device
    ) -> tuple[Factor, Factor]:
        lora_a = Factor(in_features, config.r, device)
        lora_b = Factor(config.r, out_features, device)
        if not weights_will_be_loaded():
            a, b = weight_of(lora_a), weight_of(lora_b)
            with torch.no_grad():
                init_factors(a, b, config.init_lora_weights, config.r)
            round_like_base((a, b), self._attention.out_proj.weight.dtype)
        return lora_a, lora_b

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        """Keys as the incumbent saves them (its ``out_proj`` factors sit in a wrapped ``out_proj``)."""
        state = super().adapter_state_dict(adapter_name)
        return {
            (OUT_PREFIX + key.removeprefix("out_proj_") if key.startswith("out_proj_") else key): value
            for key, value in state.items()
        }

    # --- the update ---

    def updates(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        """``s B A`` (3E, E) and ``s B_o A_o`` (E, E) of the adapter, fp32 (the second counts twice in use)."""
        scaling = self.scaling[adapter_name]
        a, b = (weight_of(m[adapter_name]).float() for m in (self.lora_A, self.lora_B))
        out_a, out_b = (weight_of(m[adapter_name]).float() for m in (self.out_proj_lora_A, self.out_proj_lora_B))
        return (b @ a) * scaling, (out_b @ out_a) * scaling

    def _weights(self) -> tuple[Tensor, Tensor]:
        attention = self._attention
        return attention.in_proj_weight, attention.out_proj.weight

    def forward(self, query: Tensor, *args: Any, **kwargs: Any) -> Any:
        """The attention's own forward (all its arguments) with the updated weights."""
        if not self.use_adapters:
            return self.base_layer(query, *args, **kwargs)
        in_weight, out_weight = self._weights()
        for name in self.active_adapters:
            delta_in, delta_out = self.updates(name)
            in_weight = in_weight + delta_in.to(in_weight.dtype)
            out_weight = out_weight + incumbent_out_proj_update(delta_out).to(out_weight.dtype)
        updated = {"in_proj_weight": in_weight, "out_proj.weight": out_weight}
        return torch.func.functional_call(self.base_layer, updated, (query, *args), kwargs)

    # --- merging: two weights, each ``W ± Σ ΔW`` in fp32, rounded once ---

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge(self._with_updates(adapter_names, 1.0))

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return self._with_updates(adapter_names, -1.0)

    def _with_updates(self, adapter_names: Sequence[str], sign: float) -> dict[str, Tensor]:
        deltas = [self.updates(n) for n in adapter_names]
        in_weight, out_weight = self._weights()
        return {
            "in_proj_weight": add_deltas(in_weight, [d[0] for d in deltas], sign),
            "out_proj.weight": add_deltas(out_weight, [2 * d[1] for d in deltas], sign),
        }

    def delta_weight(self, adapter_name: str) -> Tensor:
        raise MergeError(
            "a LoRA nn.MultiheadAttention layer updates two weights (in_proj_weight and out_proj.weight), not one "
            "'weight': it cannot be combined or converted as one matrix; use updates() for both"
        )

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        raise PeftError("a LoRA nn.MultiheadAttention layer holds two pairs of factors (in_proj and out_proj)")

    # --- what code around an nn.MultiheadAttention reads from it (nn.TransformerEncoderLayer does) ---

    @property
    def embed_dim(self) -> int:
        return int(self._attention.embed_dim)

    @property
    def kdim(self) -> int:
        return int(self._attention.kdim)

    @property
    def vdim(self) -> int:
        return int(self._attention.vdim)

    @property
    def _qkv_same_embed_dim(self) -> bool:
        return bool(self._attention._qkv_same_embed_dim)

    @property
    def num_heads(self) -> int:
        return int(self._attention.num_heads)

    @property
    def dropout(self) -> float:
        return float(self._attention.dropout)

    @property
    def batch_first(self) -> bool:
        return bool(self._attention.batch_first)

    @property
    def head_dim(self) -> int:
        return int(self._attention.head_dim)

    @property
    def in_proj_weight(self) -> Tensor:
        """The base weight (without the adapter)."""
        return self._attention.in_proj_weight

    @property
    def in_proj_bias(self) -> Tensor | None:
        return self._attention.in_proj_bias

    @property
    def out_proj(self) -> nn.Module:
        """The base ``out_proj`` module itself (without the adapter)."""
        return self._attention.out_proj

    @property
    def bias_k(self) -> Tensor | None:
        return self._attention.bias_k

    @property
    def bias_v(self) -> Tensor | None:
        return self._attention.bias_v

    @property
    def add_zero_attn(self) -> bool:
        return bool(self._attention.add_zero_attn)

    def merge_masks(self, *args: Any, **kwargs: Any) -> tuple[Tensor | None, int | None]:
        """``nn.MultiheadAttention.merge_masks`` of the base attention."""
        return self._attention.merge_masks(*args, **kwargs)


def _check_init(config: LoraConfig) -> None:
    if config.init_lora_weights not in RANDOM_INITS or config.init_lora_weights == "orthogonal":
        raise ConfigError(
            f"init_lora_weights={config.init_lora_weights!r} is not supported on nn.MultiheadAttention (Hugging "
            "Face PEFT fails on it there, so it could not load such an adapter): use True, False or 'gaussian' "
            "for attention layers, or leave them out of target_modules"
        )


def check_mha_targets(model: nn.Module, targets: Mapping[str, LoraConfig]) -> None:
    """Before anything changes: refuse an init the attention has not, and an ``out_proj`` of an
    ``nn.MultiheadAttention`` as a target of its own (the attention never calls it: no effect)."""
    for path, config in targets.items():
        if isinstance(base_of(model.get_submodule(path)), nn.MultiheadAttention):
            _check_init(config)
        parent, _, name = path.rpartition(".")
        if name != "out_proj" or not parent:
            continue
        owner = base_of(model.get_submodule(parent))
        if isinstance(owner, nn.MultiheadAttention):
            raise ConfigError(
                f"{path!r} is the out_proj of the nn.MultiheadAttention {parent!r}, whose forward never calls it (it "
                "reads the weight directly), so LoRA on it alone would do nothing: target the attention "
                f"{parent!r} (LoRA on in_proj and out_proj), or add {path!r} to exclude_modules"
            )
