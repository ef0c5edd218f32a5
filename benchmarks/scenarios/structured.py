"""LoHa, LoKr and OFT: training steps (llama-tiny, a small ConvNet) and the unmerged forward, both libraries.

Configs (the same for both): LoHa and LoKr r=8, alpha 8 (their defaults); OFT
``oft_block_size=32`` with the Neumann series (its defaults). llama-tiny: every linear
layer but the output head; ConvNet: every Conv2d and the head. Adapters start non-zero
(``init_weights=False``), as after training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.backends import BACKENDS, load_backend
from benchmarks.context import Context, Result, measure
from benchmarks.scenarios.common import batch, build, frozen_floor, inference, training_step, wrap

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "loha": ("LoHaConfig", {"r": 8, "alpha": 8}),
    "lokr": ("LoKrConfig", {"r": 8, "alpha": 8}),
    "oft": ("OFTConfig", {"oft_block_size": 32}),
}
CONV_TARGETS = ["convs.0", "convs.1", "convs.2", "convs.3", "convs.4", "head"]


def structured_config(backend_name: str, method: str, targets: Any) -> Any:
    class_name, settings = METHODS[method]
    config_class = load_backend(backend_name).config_class(class_name)
    return config_class(**settings, target_modules=targets, init_weights=False)


def _image_batch(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    rows = 4 if ctx.quick else 32
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(rows, 3, 32, 32, generator=generator).to(ctx.device)
    return images, torch.randint(0, 10, (rows,), generator=generator).to(ctx.device)


def _image_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """Forward, cross-entropy, backward, AdamW on whatever is trainable (the floor: input grads only)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None
    model.train()
    inputs = images if trainable else images.clone().requires_grad_()

    def step() -> None:
        F.cross_entropy(model(inputs), labels).backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def _train_llama(ctx: Context, method: str) -> Result:
    ids = batch(build("llama", ctx), ctx)
    variants = {"floor": training_step(frozen_floor(build("llama", ctx)), ids)}
    for name in BACKENDS:
        model = wrap(load_backend(name), build("llama", ctx), structured_config(name, method, "all-linear"))
        variants[name] = training_step(model, ids)
        if method == "oft":  # the exact Cayley transform (a solve per block) beside the Neumann series
            config = structured_config(name, method, "all-linear")
            config.use_cayley_neumann = False
            variants[f"{name}_exact"] = training_step(wrap(load_backend(name), build("llama", ctx), config), ids)
    return measure(variants, ctx, warmup=1, runs=5)


def _train_conv(ctx: Context, method: str) -> Result:
    images, labels = _image_batch(ctx)
    floor = build("convnet", ctx)
    floor.requires_grad_(False)
    variants = {"floor": _image_step(floor, images, labels)}
    for name in BACKENDS:
        model = wrap(load_backend(name), build("convnet", ctx), structured_config(name, method, CONV_TARGETS))
        variants[name] = _image_step(model, images, labels)
    return measure(variants, ctx, warmup=1, runs=7)


def _per_method(ctx: Context, train: Callable[[Context, str], Result]) -> Result:
    """One measurement per method (its variants interleaved), keyed ``<method>_<variant>``."""
    result = Result()
    for method in METHODS:
        part = train(ctx, method)
        result.wall |= {f"{method}_{k}": v for k, v in part.wall.items()}
        result.cpu |= {f"{method}_{k}": v for k, v in part.cpu.items()}
    return result


def train_structured_llama(ctx: Context) -> Result:
    """Training steps on llama-tiny (8 x 128 tokens), all linear layers: LoHa, LoKr, OFT against the frozen floor."""
    return _per_method(ctx, _train_llama)


def train_structured_conv(ctx: Context) -> Result:
    """Training steps on a small ConvNet (32 x 3 x 32 x 32, channels 32-128), every Conv2d and the head."""
    return _per_method(ctx, _train_conv)


def forward_structured(ctx: Context) -> Result:
    """No-grad forward of llama-tiny (8 x 128 tokens), adapters unmerged, against the base model."""
    base = build("llama", ctx)
    ids = batch(base, ctx)
    variants = {"base": inference(base, ids)}
    for method in METHODS:
        for name in BACKENDS:
            model = wrap(load_backend(name), build("llama", ctx), structured_config(name, method, "all-linear"))
            variants[f"{method}_{name}"] = inference(model, ids)
    return measure(variants, ctx, warmup=2, runs=9)
