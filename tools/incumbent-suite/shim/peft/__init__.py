"""A name-only import shim: ``import peft`` gives peft-core's equivalents of Hugging Face PEFT's names.

Used only to run the incumbent's own test files against peft-core (see ../../README.md).
Every ``peft`` and ``peft.<anything>`` module is made here; a name read from one of them
is looked up in ``NAMES`` (incumbent name -> ``"module:attribute"`` of peft-core or a
plugin) and nothing else happens: no wrapper, no argument translation, no behaviour.

A name with no peft-core equivalent (the incumbent's private helpers, methods not
installed) is an unmapped placeholder: importing (and calling) it works, so a test file is
collected, and using it (or what the call gave) raises ``UnmappedNameError`` naming it, so only the tests that use it
fail (and are counted as "reaches into the incumbent's internals").

The only code of its own: the environment probes of ``peft.import_utils`` (is a library
installed, which transformers version), which say something about the test machine and
nothing about PEFT.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

from peft._names import ENVIRONMENT_PROBES, NAMES, SUBMODULES


class UnmappedNameError(NotImplementedError):
    """A Hugging Face PEFT name that the shim does not map (no peft-core equivalent)."""


def _refuse(qualname: str) -> UnmappedNameError:
    return UnmappedNameError(f"peft name {qualname!r} has no peft-core equivalent (not mapped by the shim)")


class UnmappedValue:
    """What calling an unmapped name gives (test modules build configs at import time):
    any use of it raises ``UnmappedNameError``; its repr names it, for errors that only quote it."""

    def __init__(self, qualname: str) -> None:
        object.__setattr__(self, "_qualname", qualname)

    def __repr__(self) -> str:
        return f"<UnmappedName {object.__getattribute__(self, '_qualname')}(...)>"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)  # introspection (pytest's ids, copy) sees a plain object
        raise _refuse(object.__getattribute__(self, "_qualname"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(object.__getattribute__(self, "_qualname"))

    def __iter__(self) -> Any:
        raise _refuse(object.__getattribute__(self, "_qualname"))

    def __bool__(self) -> bool:
        raise _refuse(object.__getattribute__(self, "_qualname"))


class _UnmappedMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return UnmappedValue(cls.__qualname__)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return unmapped(f"{cls.__qualname__}.{attr}")

    def __getitem__(cls, key: Any) -> Any:
        raise _refuse(cls.__qualname__)

    def __iter__(cls) -> Any:
        raise _refuse(cls.__qualname__)


def unmapped(qualname: str) -> type:
    """A placeholder class for ``qualname``: importable, any use of it raises ``UnmappedNameError``."""
    name = qualname.rsplit(".", 1)[-1]
    return _UnmappedMeta(name, (), {"__qualname__": qualname, "__module__": "peft"})


def _resolve(module_name: str, name: str) -> Any:
    target = NAMES.get(f"{module_name}.{name}") or NAMES.get(name)
    if target is None:
        return None
    where, _, attributes = target.partition(":")
    try:
        found: Any = importlib.import_module(where)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
        return found
    except (ImportError, AttributeError):
        return None  # not installed here (another plugin, or not written yet)


class ShimModule(types.ModuleType):
    """``peft`` or one of its submodules: names resolve through the table."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in ENVIRONMENT_PROBES:
            return ENVIRONMENT_PROBES[name]
        found = _resolve(self.__name__, name)
        if found is not None:
            return found
        if name in SUBMODULES:
            return importlib.import_module(f"{self.__name__}.{name}")
        return unmapped(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every ``peft.<submodule>`` a ``ShimModule``."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith("peft.") and fullname != "peft._names":
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = ShimModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


sys.meta_path.insert(0, _Finder())
sys.modules[__name__].__class__ = ShimModule
__version__ = "0.21.2"  # the incumbent's release whose tests this shim runs
