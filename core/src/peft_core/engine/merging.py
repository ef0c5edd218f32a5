"""Merging adapters into the base weights: all layers or none.

``merge`` is reversible: ``unmerge`` restores the base weights bit for bit (see
``exact_merge``). ``unload(merge=True)`` is not, and needs no undo data: it computes each
layer's merged weights and swaps them in, checking everything it can first; a failure
part-way takes the written layers back out (within one rounding step) and raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from peft_core.contract.layer import AdapterLayer, adapter_layers
from peft_core.engine.exact_merge import merge_exactly, unmerge_exactly
from peft_core.engine.modules_to_save import ModulesToSaveWrapper
from peft_core.engine.state import active_adapter_names
from peft_core.engine.targeting import set_submodule
from peft_core.errors import MergeError


def _tuned_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    """Adapter layers whose weights a merge changes (not the modules_to_save copies)."""
    return [(p, layer) for p, layer in adapter_layers(model) if not isinstance(layer, ModulesToSaveWrapper)]


def _to_merge(layer: AdapterLayer, adapter_names: Sequence[str]) -> list[str]:
    return [n for n in adapter_names if n in layer.adapter_configs and n not in layer.merged_adapters]


def check_merge(
    model: nn.Module, adapter_names: Sequence[str] | None, reversible: bool, safe: bool = False
) -> tuple[list[str], list[tuple[str, AdapterLayer]]]:
    """The adapters and layers of a merge, after checking every layer; raises ``MergeError``."""
    layers = list(adapter_layers(model))
    names = list(adapter_names) if adapter_names is not None else active_adapter_names(model)
    unknown = sorted(set(names) - {n for _, layer in layers for n in layer.adapter_configs})
    if unknown:
        raise MergeError(f"cannot merge unknown adapters {unknown}")
    for path, layer in layers:
        wanted = _to_merge(layer, names)
        if not wanted:
            continue
        try:
            if isinstance(layer, ModulesToSaveWrapper):
                if not reversible:
                    layer.check_unload_merge()
                continue
            if not type(layer).capabilities.mergeable:
                raise MergeError(f"{type(layer).__name__} does not declare merging (capabilities.mergeable)")
            if layer.shared_weights:
                _refuse_shared_weights(layer)
            layer.check_merge(wanted, reversible=reversible)
            if safe:
                for name, value in layer.merged_weights(wanted).weights.items():
                    if not bool(torch.isfinite(value).all()):
                        raise MergeError(f"merging {wanted} gives non-finite values in {name!r}")
        except MergeError as exc:
            raise MergeError(f"{path}: {str(exc).rstrip('.')}; nothing was merged") from None
    return names, [(p, layer) for p, layer in layers if not isinstance(layer, ModulesToSaveWrapper)]


def _refuse_shared_weights(layer: AdapterLayer) -> None:
    shared = "; ".join(f"{name!r} is also {', '.join(others)}" for name, others in layer.shared_weights.items())
    raise MergeError(
        f"this layer's weights are shared with other modules (tied weights: {shared}); merging "
        "would change those modules too. Keep the adapter unmerged, or untie the weights first "
        "(give the module its own copy of the parameter, and set tie_word_embeddings=False)"
    )


def merge(
    model: nn.Module, adapter_names: Sequence[str] | None = None, safe: bool = False, exact_unmerge: bool = True
) -> None:
    """Merge adapters (default: the active ones) into the base weights, all layers or none.

    Every layer is checked before any is written (with ``safe``, that its merged weights are
    finite). A failure part-way rolls back the layers already merged, bit for bit. With
    ``exact_unmerge`` a later unmerge restores the weights bit for bit too, at the cost of
    CPU memory for the residues; without, within one rounding step.
    """
    names, layers = check_merge(model, adapter_names, reversible=True, safe=safe)
    if layers and not any(_to_merge(layer, names) for _, layer in layers):
        warnings.warn("All adapters are already merged, nothing to do.", UserWarning, stacklevel=3)
        return
    done: list[tuple[AdapterLayer, list[str]]] = []
    try:
        for _, layer in layers:
            merged_now = merge_layer(layer, names)
            if merged_now:
                done.append((layer, merged_now))
    except Exception as exc:
        for layer, merged_now in reversed(done):
            unmerge_layer(layer, merged_now)
        failed = next(path for path, layer in layers if all(layer is not d for d, _ in done))
        raise MergeError(f"merge failed at {failed} and was rolled back in every layer: {exc}") from exc
    if not exact_unmerge:
        for layer, _ in done:
            drop_merge_residues(layer)


def merge_layer(layer: AdapterLayer, adapter_names: Sequence[str]) -> list[str]:
    """Merge those of ``adapter_names`` that ``layer`` holds unmerged (exactly reversible); returns them.

    The layer is merged or, on an error, left bit-identical.
    """
    wanted = _to_merge(layer, adapter_names)
    if wanted:
        layer.merge_records.append(merge_exactly(layer, wanted))
        layer.merged_adapters.extend(wanted)
    return wanted


def drop_merge_residues(layer: AdapterLayer) -> None:
    """Free what makes an unmerge exact; it then restores the weights within one rounding step."""
    for record in layer.merge_records:
        record.residues.clear()


def unmerge_layer(layer: AdapterLayer, adapter_names: Sequence[str] | None = None) -> None:
    """Take merged adapters (default: all) out of ``layer``'s weights, bit for bit."""
    names = [n for n in layer.merged_adapters if adapter_names is None or n in adapter_names]
    if names:
        unmerge_exactly(layer, layer.merge_records, names)
        layer.merged_adapters = [n for n in layer.merged_adapters if n not in names]


def unmerge(model: nn.Module) -> None:
    """Take every merged adapter out of the base weights again."""
    for _, layer in _tuned_layers(model):
        unmerge_layer(layer)


def unload(model: nn.Module, merge: bool, adapter_names: Sequence[str] | None = None, safe: bool = False) -> nn.Module:
    """Remove every adapter layer; with ``merge``, fold the adapters into the base weights first.

    Without ``merge`` merged adapters are taken out first (the original weights come back).
    """
    if merge:
        _merge_for_unload(model, adapter_names, safe)
    else:
        unmerge(model)
    for path, layer in list(adapter_layers(model)):
        replacement = layer.unwrapped(merge)
        if path:
            set_submodule(model, path, replacement)
    return model


def _merge_for_unload(model: nn.Module, adapter_names: Sequence[str] | None, safe: bool) -> None:
    names, layers = check_merge(model, adapter_names, reversible=False, safe=safe)
    written: list[tuple[AdapterLayer, list[str], object]] = []
    try:
        for _, layer in layers:
            wanted = _to_merge(layer, names)
            if not wanted:
                continue
            merged = layer.merged_weights(wanted)
            with torch.no_grad():
                for name, value in merged.weights.items():
                    layer.base_layer.get_parameter(name).copy_(value)
            written.append((layer, wanted, merged.state))
    except Exception as exc:
        for layer, wanted, state in reversed(written):
            with torch.no_grad():
                for name, value in layer.unmerged_weights(wanted, state).items():
                    layer.base_layer.get_parameter(name).copy_(value)
        raise MergeError(
            f"merge_and_unload failed and was rolled back (weights within one rounding step): {exc}"
        ) from exc
