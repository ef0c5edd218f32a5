"""``PeftModel.forward`` shows the wrapped model's signature, so transformers' ``Trainer`` works.

``Trainer`` reads the model's ``forward`` signature to choose dataset columns, label names
and whether the model can return a loss. It looks through Hugging Face PEFT's own
``PeftModel`` by class, which it cannot do for ours; so each ``PeftModel`` is given a
subclass whose ``forward`` carries the wrapped model's parameters (plus ``adapter_names``).
The subclass is made once per (class, wrapped model class), keeps the class's name, and
pickles and deep-copies as its class.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

_SIGNED: dict[tuple[type, type], type] = {}
ADAPTER_NAMES = inspect.Parameter("adapter_names", inspect.Parameter.KEYWORD_ONLY, default=None)


def _forward_signature(owner: type, base: type[nn.Module]) -> inspect.Signature:
    """``(self, <base forward parameters>, *, adapter_names=None, **kwargs)``."""
    parameters = list(inspect.signature(base.forward).parameters.values())[1:]  # drop self
    var_keyword = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    kept = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name != "adapter_names"]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([self_param, *kept, ADAPTER_NAMES, *var_keyword])


def signed_class(cls: type, base: type[nn.Module]) -> type:
    """``cls`` with a ``forward`` whose signature is ``base.forward``'s (cached)."""
    key = (cls, base)
    if key not in _SIGNED:
        plain_forward = cls.forward  # type: ignore[attr-defined]

        def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            return plain_forward(self, *args, **kwargs)

        forward.__signature__ = _forward_signature(cls, base)  # type: ignore[attr-defined]
        forward.__doc__ = plain_forward.__doc__
        namespace = {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        signed = type(cls.__name__, (cls,), namespace)
        signed._unsigned_class = cls  # type: ignore[attr-defined]
        signed._signed_for = base  # type: ignore[attr-defined]
        _SIGNED[key] = signed
    return _SIGNED[key]


def restore(cls: type, base: type[nn.Module]) -> Any:
    """Unpickling: a bare instance of the signed class (its state is set next)."""
    return object.__new__(signed_class(cls, base))


def reduce_signed(model: nn.Module, protocol: int) -> Any:
    """``__reduce_ex__`` of a signed instance: rebuilt from its class and the wrapped model's class."""
    cls = type(model)
    state = model.__getstate__()  # type: ignore[no-untyped-call]
    return restore, (cls._unsigned_class, cls._signed_for), state  # type: ignore[attr-defined]
