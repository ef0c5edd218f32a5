"""``peft-core convert --to lora``: any adapter with weight updates as a LoRA adapter, and saving one.

The command belongs to peft-lora, added through ``peft_cli_commands``: its math and its
output format are LoRA's, and the core imports no plugin. (Should a second plugin offer a
conversion target, ``convert`` moves to the core with a hook for targets.)

Needs the base model (``--base``, default: the adapter's ``base_model_name_or_path`` when
it is a local folder), loaded with transformers in fp32 so that updates computed from
merged weights (DoRA, OFT) are not rounded to a half-precision base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from peft_core import PeftError, PeftModel
from peft_lora.conversion import Conversion, conversion_at, lora_conversion

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def save_as_lora(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    rank: int | float,
    adapter_name: str = "default",
    progressbar: bool = False,
) -> Conversion:
    """Convert (``rank``: an int, or a float energy threshold) and write the LoRA adapter into ``path``.

    As Hugging Face PEFT's ``save_as_lora``; returns the conversion (with the per-layer errors).
    """
    conversion = conversion_at(model, rank, adapter_name, progressbar)
    write_lora(Path(path), conversion)
    return conversion


def write_lora(directory: Path, conversion: Conversion) -> None:
    """``adapter_config.json`` and ``adapter_model.safetensors`` into ``directory``, each replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lora-", dir=directory))
    try:
        conversion.config.save_pretrained(staging)
        save_file(
            {k: t.contiguous() for k, t in conversion.tensors.items()},
            staging / "adapter_model.safetensors",
            metadata={"format": "pt"},
        )
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _base_model(adapter: Path, base: str | None, dtype: torch.dtype) -> torch.nn.Module:
    """The transformers model named by ``--base`` or the adapter's ``base_model_name_or_path`` (a local folder)."""
    if base is None:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path")
        if not base or not (Path(base) / "config.json").is_file():
            raise PeftError(
                f"the adapter's base_model_name_or_path {base!r} is not a local model folder; pass --base FOLDER"
            )
    try:
        import transformers
    except ImportError as exc:
        raise PeftError(
            "peft-core convert needs transformers to load the base model: pip install transformers"
        ) from exc
    model_config = transformers.AutoConfig.from_pretrained(base, local_files_only=True)
    names = list(getattr(model_config, "architectures", None) or [])
    model_class = getattr(transformers, names[0], None) if names else None
    if model_class is None:
        raise PeftError(f"{base}/config.json names no transformers model class in 'architectures' (got {names})")
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model: torch.nn.Module = model_class.from_pretrained(base, local_files_only=True, **{dtype_key: dtype})
    return model


def run(args: argparse.Namespace) -> int:
    adapter, out = Path(args.adapter), Path(args.out)
    if not (adapter / "adapter_config.json").is_file():
        raise PeftError(f"{adapter} is not an adapter folder (no adapter_config.json)")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise PeftError(f"{out} exists and is not empty; pass --force to replace its adapter files")
    if out.resolve() == adapter.resolve():
        raise PeftError("OUT must differ from ADAPTER")
    model = PeftModel.from_pretrained(_base_model(adapter, args.base, DTYPES[args.dtype]), adapter)
    conversion = lora_conversion(model, rank=args.rank, energy=args.energy, progressbar=not args.quiet)
    write_lora(out, conversion)
    if not args.quiet:
        width = max(len(layer.path) for layer in conversion.layers)
        for layer in conversion.layers:
            print(f"{layer.path:<{width}}  rank {layer.rank:>5}  relative error {layer.relative_error:.3e}")
    total = sum(layer.rank for layer in conversion.layers)
    print(
        f"wrote a LoRA adapter of {len(conversion.layers)} layers (total rank {total}, largest relative error "
        f"{conversion.max_relative_error:.3e}) to {out}",
        file=sys.stdout,
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``convert`` on the ``peft-core`` subcommands."""
    parser = subparsers.add_parser(
        "convert",
        help="convert an adapter with weight updates (LoRA of another rank, LoHa, LoKr, DoRA, OFT...) to LoRA",
        description="Each layer's update of its base weight becomes LoRA factors by truncated SVD; the relative "
        "error per layer is printed.",
    )
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter folder (ours or Hugging Face PEFT's)")
    parser.add_argument("out", metavar="OUT", help="output folder for the LoRA adapter")
    parser.add_argument("--to", choices=["lora"], required=True, help="the target method (lora)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--rank", type=int, help="LoRA rank of every layer (at most the layer's own)")
    size.add_argument("--energy", type=float, help="per layer, the smallest rank keeping this fraction of sum(S^2)")
    parser.add_argument("--base", help="base model folder (default: the adapter's base_model_name_or_path)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype to load the base in")
    parser.add_argument("--force", action="store_true", help="replace the adapter files in a non-empty OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-layer table")
    parser.set_defaults(run=run)
