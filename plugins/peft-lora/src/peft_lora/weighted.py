"""``add_weighted_adapter`` for LoRA: a new adapter from a weighted combination of others.

Per layer, with ``c_i = weight_i * scaling_i`` and the adapters' factors ``A_i`` (r_i, in)
and ``B_i`` (out, r_i), the target update is ``sum_i c_i B_i A_i``:

- ``cat``: ``A = [c_1 A_1; c_2 A_2; ...]``, ``B = [B_1, B_2, ...]``; exact, rank ``sum r_i``.
- ``svd``: the best rank-``k`` approximation of the target (truncated SVD, computed from
  the factors by QR, never forming the full ``out x in`` matrix); exact when ``k`` reaches
  the target's rank, otherwise off by the dropped singular values.
- ``linear``: ``A = sum_i sign(c_i) sqrt|c_i| A_i``, ``B = sum_i sqrt|c_i| B_i`` (same ranks);
  the factors are combined, so ``B A`` also holds the cross terms ``B_i A_j`` (i != j):
  exact only for a single adapter. Hugging Face PEFT's "linear" does the same.

The new adapter has scaling 1 (``lora_alpha = r``) and is not trainable, like Hugging Face
PEFT's; its config targets exactly the combined modules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from peft_core.contract import MODEL_PREFIX, AdaptedModel, ConfigError, PeftError, adapter_layers
from peft_lora.config import LoraConfig
from peft_lora.layer import LoraLayer

COMBINATION_TYPES = ("linear", "cat", "svd")


def combine_factors(
    factors: Sequence[tuple[Tensor, Tensor]], coefficients: Sequence[float], combination_type: str, rank: int | None
) -> tuple[Tensor, Tensor]:
    """New ``(A, B)`` in fp32 from the adapters' ``(A_i, B_i)`` and ``c_i`` (see the module doc)."""
    a = [f[0].detach().float() for f in factors]
    b = [f[1].detach().float() for f in factors]
    if combination_type == "linear":
        roots = [abs(c) ** 0.5 for c in coefficients]
        signs = [1.0 if c >= 0 else -1.0 for c in coefficients]
        new_a = sum((s * r * t for s, r, t in zip(signs, roots, a, strict=True)), torch.zeros_like(a[0]))
        new_b = sum((r * t for r, t in zip(roots, b, strict=True)), torch.zeros_like(b[0]))
        return new_a, new_b
    cat_a = torch.cat([c * t for c, t in zip(coefficients, a, strict=True)])
    cat_b = torch.cat(b, dim=1)
    if combination_type == "cat":
        return cat_a, cat_b
    assert rank is not None
    return truncated_svd(cat_b, cat_a, rank)


def truncated_svd(b: Tensor, a: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``rank`` factors ``(A', B')`` of ``b @ a`` (b: out x R, a: R x in), via QR of the factors.

    ``b = Qb Rb`` and ``a.T = Qa Ra`` give ``b a = Qb (Rb Ra^T) Qa^T``: the SVD of the small
    middle matrix is the SVD of the product. Columns past the product's rank are zeros.
    """
    q_b, r_b = torch.linalg.qr(b)
    q_a, r_a = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)
    new_b = (q_b @ u[:, :rank]) * s[:rank]
    new_a = (q_a @ vh[:rank].T).T
    missing = rank - new_a.shape[0]
    if missing > 0:  # asked for more than the product has: pad with exact zeros
        new_a = torch.cat([new_a, new_a.new_zeros(missing, new_a.shape[1])])
        new_b = torch.cat([new_b, new_b.new_zeros(new_b.shape[0], missing)], dim=1)
    return new_a, new_b


def weighted_adapter(
    model: AdaptedModel,
    adapters: Sequence[str],
    weights: Sequence[float],
    combination_type: str = "svd",
    svd_rank: int | None = None,
) -> tuple[LoraConfig, dict[str, Tensor]]:
    """The config and the factors (under their checkpoint keys) of the combined adapter."""
    if combination_type not in COMBINATION_TYPES:
        raise ConfigError(f"combination_type {combination_type!r} is not supported; use one of {COMBINATION_TYPES}")
    if svd_rank is not None and svd_rank <= 0:
        raise ConfigError(f"svd_rank must be > 0, got {svd_rank}")
    configs = {a: model.peft_config[a] for a in adapters}
    saved = [a for a, config in configs.items() if getattr(config, "modules_to_save", None)]
    if saved:
        raise PeftError(
            f"adapters {saved} have modules_to_save (whole trained copies of modules), which cannot be "
            "combined; combine adapters without modules_to_save"
        )
    combined: dict[str, tuple[LoraLayer, str, Tensor, Tensor]] = {}
    for path, layer in adapter_layers(model.model):
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in layer.adapter_configs]
        if not present:
            continue
        if not isinstance(layer, LoraLayer):
            raise PeftError(f"{path!r} is a {type(layer).__name__}, not a LoRA layer: it cannot be combined")
        ranks = [layer.r[a] for a, _ in present]
        factors = [
            (f[0][:r], f[1][:, :r]) for f, r in zip((layer.lora_factors(a) for a, _ in present), ranks, strict=True)
        ]
        if combination_type == "linear" and len(set(ranks)) > 1:
            raise ConfigError(
                f"combination_type 'linear' needs equal ranks, but {path!r} has ranks "
                f"{dict(zip([a for a, _ in present], ranks, strict=True))}; use 'cat' (exact) or 'svd'"
            )
        rank = svd_rank or max(ranks)
        coefficients = [w * float(layer.scaling[a]) for a, w in present]
        combined[path] = (layer, present[0][0], *combine_factors(factors, coefficients, combination_type, rank))
    first = configs[adapters[0]]
    assert isinstance(first, LoraConfig)
    config = _combined_config(first, {path: a.shape[0] for path, (_, _, a, _) in combined.items()})
    tensors: dict[str, Tensor] = {}
    for path, (layer, source, new_a, new_b) in combined.items():
        key_a, key_b = layer.factor_keys
        state = layer.adapter_state_dict(source)
        shape_a, shape_b = state[key_a].shape, state[key_b].shape
        tensors[f"{MODEL_PREFIX}{path}.{key_a}"] = new_a.reshape(new_a.shape[0], *shape_a[1:])
        tensors[f"{MODEL_PREFIX}{path}.{key_b}"] = new_b.reshape(new_b.shape[0], new_b.shape[1], *shape_b[2:])
    return config, tensors


def _combined_config(first: LoraConfig, ranks: dict[str, int]) -> LoraConfig:
    """Targets exactly ``ranks``' modules, each at its rank with scaling 1, not trainable."""
    values = list(ranks.values())
    common = max(sorted(set(values)), key=values.count)
    # Escaped full paths: a regex selecting one module here and in Hugging Face PEFT.
    pattern = {re.escape(path): r for path, r in ranks.items() if r != common}
    return first.model_copy(
        update={
            "r": common,
            "lora_alpha": common,
            "use_rslora": False,
            "rank_pattern": pattern,
            "alpha_pattern": dict(pattern),
            "target_modules": "|".join(f"(?:{re.escape(path)})" for path in ranks),
            "exclude_modules": None,
            "layers_to_transform": None,
            "layers_pattern": None,
            "modules_to_save": None,
            "bias": "none",
            "lora_dropout": 0.0,
            "init_lora_weights": True,
            "inference_mode": True,
        }
    )
