"""``add_weighted_adapter`` for LoRA: a new adapter from a weighted combination of others.

Per layer, with ``c_i = weight_i * scaling_i`` and the adapters' factors ``A_i`` (r_i, in)
and ``B_i`` (out, r_i), the intended update is ``sum_i c_i B_i A_i``:

- ``cat``: ``A = [c_1 A_1; c_2 A_2; ...]``, ``B = [B_1, B_2, ...]``; exact, rank ``sum r_i``.
- ``svd``: the best rank-``k`` approximation of the target (truncated SVD, computed from
  the factors by QR, never forming the full ``out x in`` matrix); exact when ``k`` reaches
  the target's rank, otherwise off by the dropped singular values.
- ``linear``, ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``: the rule of
  ``peft_lora.task_merging`` applied to the ``A_i`` (weights ``sign(c_i) sqrt|c_i|``) and,
  separately, to the ``B_i`` (weights ``sqrt|c_i|``); same ranks needed. ``B A`` then also
  holds cross terms ``B_i A_j``: exact only for one adapter (as in Hugging Face PEFT).
- ``ties_svd``, ``dare_linear_svd``, ``dare_ties_svd``, ``magnitude_prune_svd`` (and ``svd``
  with ``svd_clamp``): the rule applied to the updates ``c_i B_i A_i`` themselves, then a
  truncated SVD; ``svd_clamp`` clamps both factors to that quantile of their entries.

Numbers (and, for DARE, the random draws in order) are Hugging Face PEFT's. The new adapter
has scaling 1 (``lora_alpha = r``) and is not trainable; its config targets exactly the
combined modules. One adapter alone is always combined by ``linear`` (as there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from peft_core.contract import MODEL_PREFIX, AdaptedModel, ConfigError, PeftError, adapter_layers
from peft_lora.config import LoraConfig
from peft_lora.initialisation import RANDOM_INITS, embedding_factors, incumbent_stream, init_factors
from peft_lora.layer import LoraLayer
from peft_lora.task_merging import RULES, check_options, merge

DELTA_RULES = tuple(f"{rule}_svd" for rule in RULES if rule != "linear")
COMBINATION_TYPES = ("svd", "cat", *RULES, *DELTA_RULES)


def combine_factors(
    factors: Sequence[tuple[Tensor, Tensor]], coefficients: Sequence[float], combination_type: str, rank: int | None
) -> tuple[Tensor, Tensor]:
    """New ``(A, B)`` in fp32 for ``cat``, ``svd`` (by QR) and the factor rules, without options."""
    return _from_factors(factors, coefficients, combination_type, rank, None, "total")


def _from_factors(
    factors: Sequence[tuple[Tensor, Tensor]],
    coefficients: Sequence[float],
    combination_type: str,
    rank: int | None,
    density: float | None,
    majority_sign_method: str,
) -> tuple[Tensor, Tensor]:
    a = [f[0].detach().float().contiguous() for f in factors]
    b = [f[1].detach().float().contiguous() for f in factors]
    if combination_type in RULES:
        roots = [math.sqrt(abs(c)) for c in coefficients]
        weights_a = torch.tensor([r if c >= 0 else -r for r, c in zip(roots, coefficients, strict=True)])
        weights_b = torch.tensor(roots)
        new_a = merge(combination_type, a, weights_a.to(a[0].device), density, majority_sign_method)
        new_b = merge(combination_type, b, weights_b.to(b[0].device), density, majority_sign_method)
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
    return _padded((q_a @ vh[:rank].T).T, (q_b @ u[:, :rank]) * s[:rank], rank)


def _padded(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(A, B)`` grown to ``rank`` with exact zeros when the product has lower rank."""
    missing = rank - a.shape[0]
    if missing > 0:
        a = torch.cat([a, a.new_zeros(missing, a.shape[1])])
        b = torch.cat([b, b.new_zeros(b.shape[0], missing)], dim=1)
    return a, b


def _from_updates(
    layer: LoraLayer, present: Sequence[tuple[str, float]], rule: str, rank: int, options: dict[str, object]
) -> tuple[Tensor, Tensor]:
    """Rule on the updates ``w_i * delta_i`` (weight-shaped), then the truncated SVD of the result."""
    deltas = [layer.delta_weight(a) for a, _ in present]
    weights = torch.tensor([w for _, w in present]).to(deltas[0].device)
    density, sign = options["density"], options["majority_sign_method"]
    assert density is None or isinstance(density, float | int)
    combined = merge(rule, deltas, weights, density, str(sign))
    matrix = combined.flatten(1)  # convolutions: (out, in * kernel)
    if getattr(layer, "fan_in_fan_out", False) or "lora_embedding_A" in layer.factor_keys[0]:
        matrix = matrix.T  # the weight is stored (in, out): B A is its transpose
    u, s, vh = torch.linalg.svd(matrix, full_matrices=bool(options["svd_full_matrices"]), driver=options["svd_driver"])
    u = u[:, :rank] @ torch.diag(s[:rank])
    vh = vh[:rank, :]
    clamp = options["svd_clamp"]
    if clamp is not None:
        assert isinstance(clamp, float | int)
        high = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), clamp)
        u, vh = u.clamp(-high, high), vh.clamp(-high, high)
    return _padded(vh, u, rank)


def weighted_adapter(
    model: AdaptedModel,
    adapters: Sequence[str],
    weights: Sequence[float],
    combination_type: str | None = None,
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    svd_full_matrices: bool = True,
    svd_driver: str | None = None,
    density: float | None = None,
    majority_sign_method: str = "total",
) -> tuple[LoraConfig, dict[str, Tensor]]:
    """The config and the factors (under their checkpoint keys) of the combined adapter."""
    kind = combination_type or "svd"
    if kind not in COMBINATION_TYPES:
        raise ConfigError(f"combination_type {kind!r} is not supported; use one of {COMBINATION_TYPES}")
    if svd_rank is not None and svd_rank <= 0:
        raise ConfigError(f"svd_rank must be > 0, got {svd_rank}")
    if svd_clamp is not None and not 0 <= svd_clamp <= 1:
        raise ConfigError(f"svd_clamp={svd_clamp!r} is a quantile: pass a value in [0, 1], e.g. 0.99")
    rule = kind.removesuffix("_svd") if kind in DELTA_RULES else kind
    check_options(rule, density, majority_sign_method)
    if len(adapters) == 1:
        kind = "linear"  # one adapter: every rule reduces to scaling it (as in Hugging Face PEFT)
    configs = {a: model.peft_config[a] for a in adapters}
    saved = [a for a, config in configs.items() if getattr(config, "modules_to_save", None)]
    if saved:
        raise PeftError(
            f"adapters {saved} have modules_to_save (whole trained copies of modules), which cannot be "
            "combined; combine adapters without modules_to_save"
        )
    options: dict[str, object] = {
        "density": density,
        "majority_sign_method": majority_sign_method,
        "svd_clamp": svd_clamp,
        "svd_full_matrices": svd_full_matrices,
        "svd_driver": svd_driver,
    }
    if incumbent_stream():
        _incumbent_injection_draws(model, adapters, kind, svd_rank)
    combined: dict[str, tuple[LoraLayer, str, Tensor, Tensor]] = {}
    for path, layer in adapter_layers(model.model):
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in layer.adapter_configs]
        if not present:
            continue
        if not isinstance(layer, LoraLayer):
            raise PeftError(f"{path!r} is a {type(layer).__name__}, not a LoRA layer: it cannot be combined")
        ranks = [layer.r[a] for a, _ in present]
        if kind in RULES and len(set(ranks)) > 1:
            raise ConfigError(
                f"combination_type {kind!r} combines the factors entry by entry and needs equal ranks, but "
                f"{path!r} has ranks {dict(zip([a for a, _ in present], ranks, strict=True))}; use 'cat' (exact), "
                "'svd' or a '*_svd' type"
            )
        rank = svd_rank or max(ranks)
        if kind in DELTA_RULES or (kind == "svd" and svd_clamp is not None):
            new_a, new_b = _from_updates(layer, present, "linear" if kind == "svd" else rule, rank, options)
        else:
            factors = [
                (f[0][:r], f[1][:, :r]) for f, r in zip((layer.lora_factors(a) for a, _ in present), ranks, strict=True)
            ]
            coefficients = [w * float(layer.scaling[a]) for a, w in present]
            new_a, new_b = _from_factors(factors, coefficients, kind, rank, density, majority_sign_method)
        combined[path] = (layer, present[0][0], new_a, new_b)
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


def _incumbent_injection_draws(model: AdaptedModel, adapters: Sequence[str], kind: str, svd_rank: int | None) -> None:
    """The random draws Hugging Face PEFT makes before combining: it first adds the new adapter
    (every factor drawn, at one rank for all layers, with the first adapter's init), so DARE's
    masks come later in the stream. Drawn here into scratch tensors, in the same order."""
    configs = [model.peft_config[a] for a in adapters]
    ranks = [max([c.r, *c.rank_pattern.values()]) for c in configs if isinstance(c, LoraConfig)]
    if kind in RULES:
        rank = ranks[0]
    elif kind == "cat":
        rank = sum(ranks)
    else:
        rank = svd_rank or max(ranks)
    first = configs[0]
    assert isinstance(first, LoraConfig)
    init = (
        first.init_lora_weights if first.init_lora_weights in RANDOM_INITS else False
    )  # PiSSA/OLoRA: the constructors' draws
    for _, layer in adapter_layers(model.model):
        present = [a for a in adapters if a in layer.adapter_configs]
        if not present or not isinstance(layer, LoraLayer):
            continue
        key_a, key_b = layer.factor_keys
        state = layer.adapter_state_dict(present[0])
        shape_a, shape_b = state[key_a].shape, state[key_b].shape
        if key_a == "lora_embedding_A":
            embedding_factors(rank, shape_a[1], shape_b[0], init, torch.empty(()).device)
        else:
            a, b = torch.empty(rank, *shape_a[1:]), torch.empty(shape_b[0], rank, *shape_b[2:])
            init_factors(a, b, init, rank)


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
