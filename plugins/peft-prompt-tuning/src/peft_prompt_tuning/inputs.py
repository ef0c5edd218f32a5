"""The model inputs prompt learning changes: naming positional arguments, the attention mask,
labels, position and token type ids, and telling a generation step that must receive the
virtual tokens (no KV cache yet) from one that continues a cache that already holds them.

Every rule here is Hugging Face PEFT's, so that an adapter computes the same outputs and
generates the same tokens in both libraries.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from peft_core.contract import PeftError, TaskType

#: Tasks whose models take token type ids: the virtual tokens get type 0 there; others drop them.
KEEPS_TOKEN_TYPES = frozenset({TaskType.SEQ_CLS.value, TaskType.TOKEN_CLS.value, TaskType.QUESTION_ANS.value})
IGNORE_INDEX = -100  # the label cross-entropy skips


def named_inputs(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the positional ``args`` named by ``function``'s signature (``model(ids, mask)``)."""
    if not args:
        return dict(kwargs)
    try:
        bound = inspect.signature(function).bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise PeftError(f"cannot name the positional arguments of this call ({exc}); pass them by keyword") from None
    named = dict(bound.arguments)
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in named:
            named.update(named.pop(name))
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and name in named:
            raise PeftError("prompt learning cannot pass extra positional arguments; pass them by keyword")
    return named


def batch_size(inputs: dict[str, Any], *keys: str) -> int:
    """Rows of the batch, from the first of ``keys`` (default: the ids or the embeddings) given."""
    keys = keys or ("input_ids", "inputs_embeds")
    for key in keys:
        value = inputs.get(key)
        if isinstance(value, Tensor):
            return int(value.shape[0])
    raise PeftError(f"prompt learning needs one of {', '.join(keys)} to know the batch")


def with_prefix_mask(mask: Any, count: int) -> Any:
    """A 2-D attention mask with ``count`` ones in front (for the virtual tokens); None stays None."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise PeftError(
            f"prompt learning extends 2-D attention masks (batch, length); got {shape}. Pass a 2-D mask, or "
            "generate with the default dynamic cache (a static cache builds 4-D masks)"
        )
    ones = torch.ones(mask.shape[0], count, dtype=mask.dtype, device=mask.device)
    return torch.cat((ones, mask), dim=1)


def with_prefix_labels(labels: Any, count: int) -> Any:
    """Labels with ``count`` ignored positions in front (the loss skips the virtual tokens)."""
    if labels is None:
        return None
    ignored = torch.full((labels.shape[0], count), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    return torch.cat((ignored, labels), dim=1)


def with_prefix_token_types(token_type_ids: Tensor, count: int) -> Tensor:
    """Token type ids with ``count`` zeros (type 0) in front."""
    zeros = torch.zeros(token_type_ids.shape[0], count, dtype=torch.long, device=token_type_ids.device)
    return torch.cat((zeros, token_type_ids.long()), dim=1)


def adjust_ids(inputs: dict[str, Any], task: str, position_offset: int | None, quiet: bool = False) -> None:
    """Position and token type ids as Hugging Face PEFT passes them on, in place.

    ``position_offset`` None: the positions are dropped (virtual tokens in front shift
    them; the model counts from 0 again), with a warning unless ``quiet`` (generate always
    passes them). An offset (prefix tuning) is added to them. Token type ids are dropped,
    with a warning, except for tasks whose models use them (see ``KEEPS_TOKEN_TYPES``), which
    the tuner extends itself.
    """
    positions = inputs.get("position_ids")
    if positions is not None:
        if position_offset is None:
            if not quiet:
                warnings.warn(
                    "position_ids are not used with prompt learning; ignoring them", UserWarning, stacklevel=5
                )
            inputs.pop("position_ids")
        else:
            inputs["position_ids"] = positions + position_offset
    if inputs.get("token_type_ids") is not None and task not in KEEPS_TOKEN_TYPES:
        if not quiet:
            warnings.warn("token_type_ids are not used with prompt learning; ignoring them", UserWarning, stacklevel=5)
        inputs.pop("token_type_ids")


def needs_virtual_tokens(inputs: dict[str, Any], cache_key: str = "past_key_values") -> bool:
    """Whether a generation step must receive the virtual tokens: no KV cache, an empty one, or
    ``use_cache=False`` (each step then runs on the whole sequence again)."""
    if inputs.get("use_cache") is False:
        return True
    cache = inputs.get(cache_key)
    if cache is None:
        return True
    length = getattr(cache, "get_seq_length", None)
    return callable(length) and int(length()) == 0


def embed(model: nn.Module, inputs: dict[str, Any], ids_key: str, embeds_key: str) -> Tensor:
    """The input embeddings of ``inputs`` (popping both keys): given ones, or the ids embedded."""
    ids, embeds = inputs.pop(ids_key, None), inputs.pop(embeds_key, None)
    if embeds is not None:
        return embeds  # type: ignore[no-any-return]
    if ids is None:
        raise PeftError(f"prompt learning needs {ids_key} or {embeds_key}")
    embedded: Tensor = model(ids)
    return embedded
