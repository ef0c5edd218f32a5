"""PiSSA and OLoRA: the adapter starts as a piece of the base weight, and the base keeps the rest.

Both split ``W = W_res + s B A`` (``s`` the LoRA scaling) and write ``W_res`` into the base
layer, so the model starts as the base model and training moves the principal part:

- PiSSA (``"pissa"``): ``B A`` is the rank-r truncated SVD of ``W``,
  ``A = sqrt(S_r / s) Vh_r`` and ``B = U_r sqrt(S_r / s)``; ``"pissa_niter_[n]"`` takes
  the factors from ``torch.svd_lowrank`` with ``n`` subspace iterations (faster, random).
- OLoRA (``"olora"``): ``W = Q R``; ``A = R[:r]`` and ``B = Q[:, :r]``.

Computed in fp32 on the weight's device, with the same operations as Hugging Face PEFT,
so both give the same factors and residual. A saved adapter keeps ``init_lora_weights``:
loading it onto the original base model splits the base again (in both libraries), then
the trained factors are loaded. The rewrite is permanent, as there: ``unload()`` and
``delete_adapter`` leave the residual base (Hugging Face PEFT's PiSSA recipe saves it so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from peft_core.contract import ConfigError, base_of, is_conv1d
from peft_lora.config import LoraConfig

_PISSA_NITER = re.compile(r"pissa_niter_(\d+)")


def rewrites_base(init: bool | str) -> bool:
    """Whether ``init_lora_weights`` splits the base weight (PiSSA or OLoRA)."""
    return isinstance(init, str) and (init == "olora" or init.startswith("pissa"))


def pissa_iterations(init: str) -> int | None:
    """``n`` of ``"pissa_niter_[n]"``; None for the exact ``"pissa"``."""
    found = _PISSA_NITER.fullmatch(init)
    return int(found.group(1)) if found else None


def split_weight(
    weight: Tensor, init: str, r: int, scaling: float, fan_in_fan_out: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, B, W_res)`` for the base ``weight``: A (r, in) and B (out, r) in fp32, ``W_res`` as the weight.

    ``weight`` is (out, in), or (in, out) with ``fan_in_fan_out`` (PiSSA works on the
    (out, in) matrix; OLoRA, as the incumbent, only on (out, in) weights).
    """
    matrix = weight.detach().to(torch.float32)
    if init == "olora":
        q, upper = torch.linalg.qr(matrix)
        a, b = upper[:r].contiguous(), q[:, :r].contiguous()
    else:
        matrix = matrix.T if fan_in_fan_out else matrix
        a, b = _pissa_factors(matrix, init, r, scaling)
    residual = (matrix - (scaling * b) @ a).to(weight.dtype)
    return a, b, residual.T if fan_in_fan_out and init != "olora" else residual


def _pissa_factors(matrix: Tensor, init: str, r: int, scaling: float) -> tuple[Tensor, Tensor]:
    niter = pissa_iterations(init)
    if niter is None:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        u_r, s_r, vh_r = u[:, :r], s[:r] / scaling, vh[:r]
    else:
        u_r, s_r, v_r = torch.svd_lowrank(matrix, r, niter=niter)
        s_r, vh_r = s_r / scaling, v_r.t()
    root = torch.diag(torch.sqrt(s_r))
    return root @ vh_r, u_r @ root


def check_targets(model: nn.Module, targets: Mapping[str, LoraConfig]) -> None:
    """Refuse, before any weight changes, targets that ``init_lora_weights`` cannot initialise.

    ``targets``: each target's path and its resolved config. Convolutions have no
    PiSSA/OLoRA/orthogonal init; OLoRA needs (out, in) weights (no Conv1D); a split needs
    ``r <= min(out, in)`` and a weight no other module shares (it would change that one too).
    """
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    for path, config in targets.items():
        init = config.init_lora_weights
        module = base_of(model.get_submodule(path))
        if init in (True, False, "gaussian") or isinstance(module, nn.Embedding):
            continue  # embeddings take the default init for every other value, as in Hugging Face PEFT
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise ConfigError(
                f"init_lora_weights={init!r} is not defined for convolutions such as {path!r} (as in Hugging Face "
                "PEFT); leave conv layers out of target_modules, or use True, False or 'gaussian'"
            )
        if not rewrites_base(init):
            continue
        if init == "olora" and is_conv1d(module):
            raise ConfigError(
                f"init_lora_weights='olora' needs weights stored as (out, in); {path!r} is a transformers Conv1D "
                "(stored (in, out)); use 'pissa', or leave Conv1D layers out of target_modules"
            )
        weight = module.get_parameter("weight")
        if config.r > min(weight.shape):
            raise ConfigError(
                f"init_lora_weights={init!r} splits rank r={config.r} off {path!r}, whose weight {tuple(weight.shape)} "
                f"has rank at most {min(weight.shape)}; lower r (or rank_pattern) to at most {min(weight.shape)}"
            )
        shared = [name for name in owners.get(id(weight), []) if not name.startswith(path + ".")]
        if shared:
            raise ConfigError(
                f"init_lora_weights={init!r} rewrites the weight of {path!r}, which is shared with {shared[0]!r} "
                "(tied weights): that module would change too. Untie the weights, leave this module out of "
                "target_modules, or use init_lora_weights=True"
            )
