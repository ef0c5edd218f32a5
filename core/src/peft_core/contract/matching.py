"""Which modules a config's name lists select: one rule for every name-list field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from torch import nn

ALL_LINEAR = "all-linear"

NameSpec = str | Sequence[str] | None


def matches(module_path: str, spec: NameSpec) -> bool:
    """Whether ``module_path`` (dotted, e.g. ``"h.0.attn.c_attn"``) is selected by ``spec``.

    A list entry matches the path itself or a path ending in ``"." + entry`` (so ``"fc"``
    never matches ``"c_fc"``); a single string is a regex that must match the whole path.
    """
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, module_path) is not None
    return any(module_path == entry or module_path.endswith("." + entry) for entry in spec)


def matching_entry(module_path: str, entries: Iterable[str]) -> str | None:
    """The first entry of a key list (e.g. ``rank_pattern``) selecting ``module_path``.

    Keys are tried as suffix entries first, then as full regexes, as Hugging Face PEFT
    does for ``rank_pattern``/``alpha_pattern``.
    """
    entries = list(entries)
    for entry in entries:
        if matches(module_path, [entry]):
            return entry
    for entry in entries:
        if _safe_fullmatch(entry, module_path):
            return entry
    return None


def _safe_fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return False


def layer_index(module_path: str, layers_pattern: str | Sequence[str] | None) -> int | None:
    """The integer path component after ``layers_pattern`` (or the first one when no pattern)."""
    parts = module_path.split(".")
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
    for i, part in enumerate(parts):
        if not part.isdigit():
            continue
        if not patterns or (i > 0 and parts[i - 1] in patterns):
            return int(part)
    return None


def is_conv1d(module: nn.Module) -> bool:
    """A transformers ``Conv1D`` (a linear layer storing its weight (in, out)); matched by name: no import."""
    return type(module).__name__ == "Conv1D"


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or a transformers-style ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def output_head_names(model: nn.Module) -> set[str]:
    """Paths of the model's output head (``get_output_embeddings()``), excluded by all-linear."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return set()
    return {path for path, module in model.named_modules() if module is head}


def closest_names(entry: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Real module names that resemble ``entry`` (its last component is compared too)."""
    candidates = list(candidates)
    leaves = sorted({path.rsplit(".", 1)[-1] for path in candidates} | set(candidates))
    return difflib.get_close_matches(entry, leaves, n=n, cutoff=0.5)


def unmatched_entries(spec: NameSpec, paths: Sequence[str]) -> list[str]:
    """Entries of a list ``spec`` (or the regex itself) that select none of ``paths``."""
    if spec is None or spec == ALL_LINEAR:
        return []
    if isinstance(spec, str):
        return [] if any(matches(path, spec) for path in paths) else [spec]
    return [entry for entry in spec if not any(matches(path, [entry]) for path in paths)]


def describe_unmatched(field: str, missing: list[str], paths: Sequence[str]) -> str:
    """One message naming each unmatched entry and the closest real module names."""
    lines = [f"{field}: {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} matched no module:"]
    for entry in missing:
        close = closest_names(entry, paths)
        hint = f" (closest: {', '.join(close)})" if close else ""
        lines.append(f"  {entry!r}{hint}")
    lines.append("Fix the names (list entries match a module path or its last components) or remove them.")
    return "\n".join(lines)
