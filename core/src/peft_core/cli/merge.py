"""``peft-core merge``: fold an adapter into its base model and write a plain transformers checkpoint.

The output is written into a temporary folder beside ``--out`` and moved into place at
the end, so a failure leaves no half-written checkpoint and ``--force`` replaces an old
one only once the new one is complete. Needs transformers; the progress bar uses tqdm
(``pip install peft-core[cli]``) and falls back to plain lines without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch

from peft_core.api.peft_model import PeftModel
from peft_core.errors import PeftError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Files of a model folder that hold weights; everything else the merge did not write
# (tokenizer, chat template...) is copied along.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".index.json")

STAGES = ("load base model", "load adapter", "merge", "save", "copy tokenizer files")


class _Progress:
    """One step per stage: a tqdm bar when tqdm is installed, else a line per stage (stderr)."""

    def __init__(self, quiet: bool) -> None:
        self.bar: Any = None
        self.quiet = quiet
        if quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=len(STAGES), desc="merge", unit="step", file=sys.stderr)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        elif not self.quiet:
            print(f"merge: {name}...", file=sys.stderr)
        yield
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _model_class(base_dir: Path) -> Any:
    """The transformers class named in ``config.json`` (``architectures``)."""
    try:
        import transformers
    except ImportError as exc:
        raise PeftError("peft-core merge needs transformers: pip install transformers") from exc
    config = transformers.AutoConfig.from_pretrained(base_dir, local_files_only=True)
    names = list(getattr(config, "architectures", None) or [])
    model_class = getattr(transformers, names[0], None) if names else None
    if model_class is None:
        raise PeftError(
            f"{base_dir / 'config.json'} names no transformers model class in 'architectures' "
            f"(got {names}); merge needs it to load the model"
        )
    return model_class


def _check_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    base, adapter, out = Path(args.base), Path(args.adapter), Path(args.out)
    if not (base / "config.json").is_file():
        raise PeftError(f"--base {base} is not a transformers model folder (no config.json)")
    if not adapter.is_dir():
        raise PeftError(f"--adapter {adapter} is not a directory")
    if out.exists() and not out.is_dir():
        raise PeftError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise PeftError(f"--out {out} exists and is not empty; pass --force to replace it")
    if out.resolve() in (base.resolve(), adapter.resolve()):
        raise PeftError("--out must differ from --base and --adapter")
    return base, adapter, out


def _replace_dir(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` is removed only after the move succeeded."""
    if not out.exists():
        new.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{new.name}")
    out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def merge_checkpoint(
    base: Path, adapter: Path, out: Path, dtype: torch.dtype | None = None, quiet: bool = False
) -> None:
    """Load ``base`` and ``adapter``, merge (refusing non-finite results), write ``out`` atomically."""
    import transformers

    model_class = _model_class(base)
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    bars = transformers.utils.logging.is_progress_bar_enabled()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is a normal folder
    progress = _Progress(quiet)
    try:
        with progress.stage(STAGES[0]):
            model = model_class.from_pretrained(base, local_files_only=True, **{dtype_key: dtype or "auto"})
        with progress.stage(STAGES[1]):
            peft_model = PeftModel.from_pretrained(model, adapter)
        with progress.stage(STAGES[2]):
            merged = peft_model.merge_and_unload(safe_merge=True)
        try:
            with progress.stage(STAGES[3]):
                cast(Any, merged).save_pretrained(staging)  # a transformers model again
            with progress.stage(STAGES[4]):
                _copy_other_files(base, staging)
            _replace_dir(staging, out)
        except OSError as exc:
            raise PeftError(f"writing the merged model to {out} failed, nothing was changed: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        progress.close()
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _copy_other_files(base: Path, staging: Path) -> None:
    """Copy the base folder's files that are no weights and were not written (tokenizer...)."""
    written = {p.name for p in staging.iterdir()}
    for source in sorted(base.iterdir()):
        if source.is_file() and source.name not in written and not source.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(source, staging / source.name)


def run(args: argparse.Namespace) -> int:
    base, adapter, out = _check_paths(args)
    merge_checkpoint(base, adapter, out, DTYPES[args.dtype] if args.dtype else None, quiet=args.quiet)
    print(f"merged {adapter} into {base}: {out}")
    return 0


def add_parser(commands: Any) -> None:
    """Register ``merge`` on the subcommand parsers of ``peft-core``."""
    parser = commands.add_parser("merge", help="merge an adapter into its base model: a plain transformers checkpoint")
    parser.add_argument("--base", required=True, help="base model folder (transformers save_pretrained layout)")
    parser.add_argument("--adapter", required=True, help="adapter folder (ours or Hugging Face PEFT's)")
    parser.add_argument("--out", required=True, help="output folder for the merged model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of the merged weights (default: as saved)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(run=run)
