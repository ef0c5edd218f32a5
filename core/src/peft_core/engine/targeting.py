"""Which modules an adapter wraps or saves whole: one set of rules for every method."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import AdapterLayer, plain_modules
from peft_core.contract.matching import (
    ALL_LINEAR,
    describe_unmatched,
    is_linear,
    layer_index,
    matches,
    output_head_names,
    unmatched_entries,
)
from peft_core.contract.rows import BASE_ADAPTER
from peft_core.contract.tuner import BaseTuner, base_of
from peft_core.errors import ConfigError, TargetNotFoundError

logger = logging.getLogger("peft_core")

# Head names Hugging Face PEFT adds to modules_to_save by task type, present or not.
TASK_HEADS = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}


def validate_adapter_name(name: object) -> str:
    """An adapter name is a key in module dicts and a folder name: refuse what breaks either."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it must be a non-empty string"
    elif name == BASE_ADAPTER:
        problem = f"{BASE_ADAPTER!r} is reserved for rows without an adapter"
    elif any(c in name for c in "./\\") or not name.isprintable():
        problem = "it must not contain '.', '/', '\\' or control characters (it names a folder and a module key)"
    elif hasattr(nn.ModuleDict(), name):
        problem = f"{name!r} is an nn.Module attribute name"
    if problem:
        raise ConfigError(f"invalid adapter name {name!r}: {problem}")
    assert isinstance(name, str)
    return name


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (which must exist)."""
    parent_path, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent_path), leaf, module)


def with_default_targets(tuner: BaseTuner, model: nn.Module, config: PeftConfig, required: bool = True) -> PeftConfig:
    """``config`` with the tuner's default ``target_modules`` for this architecture when it names none
    (an error without defaults, unless not ``required``: the tuner has other targets)."""
    if getattr(config, "target_modules", "unset") is not None:
        return config
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    defaults = tuner.default_target_modules.get(str(model_type)) if model_type is not None else None
    if defaults is None and not required:
        return config
    if defaults is None:
        known = ", ".join(sorted(tuner.default_target_modules)) or "none"
        raise ConfigError(
            f"{type(config).__name__}.target_modules is not set and {tuner.name} has no default targets for "
            f"model_type {model_type!r} (defaults exist for: {known}); name the modules to adapt (e.g. "
            "['q_proj', 'v_proj']), give a regex, or use 'all-linear'"
        )
    logger.info("%s: no target_modules given; using the defaults for %s: %s", tuner.name, model_type, defaults)
    return config.model_copy(update={"target_modules": list(defaults)})


def find_targets(model: nn.Module, config: PeftConfig) -> list[str]:
    """Dotted paths of the modules ``config`` selects; an error for entries that match nothing."""
    spec = getattr(config, "target_modules", None)
    if not spec:
        raise ConfigError(
            f"{type(config).__name__}.target_modules is empty: name the modules to adapt "
            "(e.g. ['q_proj', 'v_proj']), give a regex, or use 'all-linear'"
        )
    saved = getattr(config, "modules_to_save", None)
    excluded = getattr(config, "exclude_modules", None)
    layers = getattr(config, "layers_to_transform", None)
    candidates = list(plain_modules(model))
    paths = [path for path, _ in candidates]
    if spec == ALL_LINEAR:
        skip = output_head_names(model)
        chosen = [
            path
            for path, module in candidates
            if is_linear(base_of(module)) and path not in skip and not matches(path, saved)
        ]
    else:
        missing = unmatched_entries(spec, paths)
        if missing:
            raise TargetNotFoundError(describe_unmatched("target_modules", missing, paths))
        chosen = [path for path in paths if matches(path, spec)]
    if excluded:
        missing = unmatched_entries(excluded, paths)
        if missing:
            raise TargetNotFoundError(describe_unmatched("exclude_modules", missing, paths))
        chosen = [path for path in chosen if not matches(path, excluded)]
    if layers is not None:
        wanted = {layers} if isinstance(layers, int) else set(layers)
        chosen = [path for path in chosen if layer_index(path, getattr(config, "layers_pattern", None)) in wanted]
    if not chosen:
        raise TargetNotFoundError(
            f"target_modules={spec!r} with exclude_modules/layers_to_transform left no module to adapt"
        )
    return chosen


def find_modules_to_save(model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> list[str]:
    """Paths of the modules trained and saved whole (``modules_to_save``), checked."""
    entries = getattr(config, "modules_to_save", None)
    if not entries:
        return []
    candidates = list(plain_modules(model))
    paths = [path for path, _ in candidates]
    missing = unmatched_entries(entries, paths)
    if missing:
        raise TargetNotFoundError(describe_unmatched("modules_to_save", missing, paths))
    chosen = [path for path, _ in candidates if matches(path, entries)]
    clash = sorted(set(chosen) & set(targets))
    if clash:
        raise ConfigError(f"modules {clash} are both targets and modules_to_save; choose one for each")
    for path in chosen:
        module = model.get_submodule(path)
        if isinstance(module, AdapterLayer) and not module.nests_adapter_layers:
            raise ConfigError(f"{path!r} already holds an adapter and cannot be in modules_to_save")
        if isinstance(module, nn.ModuleDict | nn.ModuleList | nn.ParameterList | nn.ParameterDict):
            raise ConfigError(
                f"modules_to_save entry {path!r} is a {type(module).__name__}, a container that is never called "
                "itself; name the modules inside it instead"
            )
    return chosen


def with_task_heads(model: nn.Module, config: PeftConfig) -> PeftConfig:
    """``config`` with the task's head added to ``modules_to_save`` (as Hugging Face PEFT does).

    A classification head is freshly initialised, so it must train and be saved with the
    adapter; heads the model lacks, heads already listed and list targets are skipped.
    """
    heads = TASK_HEADS.get(str(config.task_type), ())
    if not heads or "modules_to_save" not in type(config).model_fields:
        return config
    listed = list(getattr(config, "modules_to_save", None) or [])
    target_modules = getattr(config, "target_modules", None)
    targets = target_modules if isinstance(target_modules, list) else []
    paths = [path for path, _ in model.named_modules() if path]
    added = [h for h in heads if h not in listed and h not in targets and any(matches(p, [h]) for p in paths)]
    if not added:
        return config
    return config.model_copy(update={"modules_to_save": listed + added})
