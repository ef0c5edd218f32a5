"""Helpers for fast adapter paths: stacked per-adapter values rebuilt only when stale, and
the checks that keep in-place ops and ``torch.compile`` graphs correct."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

# torch.compiler.is_compiling is torch >= 2.3; the libraries support torch >= 2.2.
_is_compiling: Callable[[], bool]
if hasattr(torch.compiler, "is_compiling"):
    _is_compiling = torch.compiler.is_compiling
else:  # pragma: no cover - torch 2.2
    import torch._dynamo

    _is_compiling = torch._dynamo.is_compiling


def compiling() -> bool:
    """Whether torch.compile is tracing this call (branches that would break its graph check it)."""
    return bool(_is_compiling())


def records_grad(*tensors: Tensor) -> bool:
    """Whether autograd records an op on these tensors (grad mode on and one requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class StackCache(Generic[T]):
    """A value built from the tensors of a layer's adapters (adapter ``i``'s are ``sources()[i]``).

    The caller gives a cheap ``key`` that changes when adapters are added, removed or
    replaced (names, object identities, float scalings), and the adapters ``used`` by this
    call: their tensors are checked for in-place changes (version counter: optimizer steps,
    ``copy_``) and re-pointing (``.data = ...``). Adapters not used by a call cannot make
    its result stale, so the check costs nothing per unused adapter.
    """

    def __init__(self) -> None:
        self._key: Hashable = None
        self._value: T | None = None
        self._signatures: list[tuple[tuple[Tensor, int, int], ...]] = []

    def get(
        self,
        key: Hashable,
        used: Iterable[int],
        sources: Callable[[], Sequence[Sequence[Tensor]]],
        build: Callable[[], T],
    ) -> T:
        """The cached value, rebuilt by ``build()`` if ``key`` changed or a ``used`` adapter's tensors did."""
        if self._value is None or key != self._key or any(self._changed(i) for i in used):
            self._value = build()
            self._key = key
            # Holding the tensors keeps their ids unique while they are compared.
            self._signatures = [tuple((t, t._version, t.data_ptr()) for t in group) for group in sources()]
        return self._value

    def _changed(self, index: int) -> bool:
        return any(t._version != version or t.data_ptr() != ptr for t, version, ptr in self._signatures[index])

    def clear(self) -> None:
        """Forget the value (the next ``get`` builds it)."""
        self._key, self._value, self._signatures = None, None, []


def identities(values: Iterable[object]) -> tuple[int, ...]:
    """Object ids, for keys that must change when an object is replaced (not when it is equal)."""
    return tuple(map(id, values))
