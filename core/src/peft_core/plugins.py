"""The tuner registry: filled lazily from installed plugins, isolated from broken ones."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pluggy
from importlib_metadata import entry_points
from torch import nn

from peft_core import hookspecs
from peft_core.config import PeftConfig
from peft_core.errors import PluginConflictError, PluginError

if TYPE_CHECKING:
    from peft_core.layer import AdapterLayer
    from peft_core.tuner import BaseTuner

ENTRY_POINT_GROUP = "peft_core.plugins"
DISABLE_ENV = "PEFT_CORE_DISABLE_PLUGINS"
STRICT_ENV = "PEFT_CORE_STRICT_PLUGINS"

T = TypeVar("T", bound="type[BaseTuner]")


@dataclass
class PluginInfo:
    """One plugin as ``peft-core plugins`` lists it."""

    name: str
    distribution: str
    version: str | None = None
    tuners: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    @property
    def broken(self) -> bool:
        return self.error is not None


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


class PluginRegistry:
    """Tuners by name and by ``peft_type``, and the plugins that provided them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._discovered = False
        self._manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._manager.add_hookspecs(hookspecs)
        self._plugins: list[PluginInfo] = []
        self._tuners: dict[str, tuple[type[BaseTuner], str]] = {}  # name -> (class, distribution)
        self._conflicts: dict[str, str] = {}  # tuner name -> message

    # --- discovery ---

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            blocked = _env_list(DISABLE_ENV)
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else "<unknown>"
                version = ep.dist.version if ep.dist is not None else None
                if ep.name in blocked or dist in blocked:
                    self._plugins.append(PluginInfo(ep.name, dist, version, disabled=True))
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken plugin must not break the others
                    self._report_broken(PluginInfo(ep.name, dist, version), f"import failed: {exc!r}")
                    continue
                self._add_plugin(plugin, PluginInfo(ep.name, dist, version))

    def _report_broken(self, info: PluginInfo, reason: str) -> None:
        info.error = reason
        self._plugins.append(info)
        message = f"peft-core plugin {info.name!r} ({info.distribution}) is broken and was skipped: {reason}"
        if os.environ.get(STRICT_ENV, "") not in ("", "0"):
            raise PluginError(message + f" ({STRICT_ENV} is set)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _add_plugin(self, plugin: object, info: PluginInfo) -> PluginInfo:
        try:
            self._manager.register(plugin, name=f"{info.distribution}:{info.name}")
        except Exception as exc:  # wrong hook signatures
            self._report_broken(info, f"does not meet the hook contract: {exc}")
            return info
        try:
            self._manager.check_pending()  # hook names that match no spec (typos)
        except Exception as exc:
            self._manager.unregister(plugin)
            self._report_broken(info, f"does not meet the hook contract: {exc}")
            return info
        try:
            tuners = self._collect_tuners(plugin)
        except Exception as exc:
            self._manager.unregister(plugin)
            self._report_broken(info, str(exc) if isinstance(exc, PluginError) else f"peft_tuners raised {exc!r}")
            return info
        for tuner in tuners:
            self._add_tuner(tuner, info.distribution)
            info.tuners.append(tuner.name)
        self._plugins.append(info)
        return info

    def _collect_tuners(self, plugin: object) -> list[type[BaseTuner]]:
        from peft_core.tuner import BaseTuner

        impl = getattr(plugin, "peft_tuners", None)
        if impl is None:
            return []
        result = impl()
        if not isinstance(result, list | tuple):
            raise PluginError(f"peft_tuners must return a list of BaseTuner classes, got {type(result).__name__}")
        for tuner in result:
            if not (isinstance(tuner, type) and issubclass(tuner, BaseTuner)):
                raise PluginError(f"peft_tuners returned {tuner!r}, which is not a BaseTuner subclass")
            _check_tuner_class(tuner)
        return list(result)

    def _add_tuner(self, tuner: type[BaseTuner], distribution: str) -> None:
        # Installed plugins that clash are both reported when the clashing name is used,
        # so one bad pair does not stop every other tuner from loading.
        for name, (other, other_dist) in self._tuners.items():
            same_name = name == tuner.name
            if same_name or _peft_type(other) == _peft_type(tuner):
                what = f"tuner name {tuner.name!r}" if same_name else f"peft_type {_peft_type(tuner)!r}"
                message = (
                    f"{what} is claimed by two plugins: {other_dist} ({other.__qualname__}) and "
                    f"{distribution} ({tuner.__qualname__}); uninstall one, or block one with "
                    f"{DISABLE_ENV}=<plugin name>"
                )
                self._conflicts[name] = message
                self._conflicts[tuner.name] = message
                return
        self._tuners[tuner.name] = (tuner, distribution)

    # --- in-process registration ---

    def register(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Add a plugin object (module or instance with hookimpls) in this process."""
        self._ensure_discovered()
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name or module, f"<in-process: {module}>")
        with self._lock:
            if any(p.name == info.name and p.distribution == info.distribution for p in self._plugins):
                raise PluginConflictError(f"plugin {info.name!r} is already registered")
            for tuner in self._collect_tuners(plugin):  # validate before registering anything
                self._check_free(tuner)
            try:
                self._manager.register(plugin, name=f"{info.distribution}:{info.name}")
                self._manager.check_pending()  # hook names that match no spec (typos)
            except Exception as exc:
                if self._manager.is_registered(plugin):
                    self._manager.unregister(plugin)
                raise PluginError(f"plugin {info.name!r} does not meet the hook contract: {exc}") from exc
            for tuner in self._collect_tuners(plugin):
                self._tuners[tuner.name] = (tuner, info.distribution)
                info.tuners.append(tuner.name)
            self._plugins.append(info)
        return info

    def unregister(self, plugin: object) -> None:
        """Remove an in-process plugin and its tuners (for tests and notebooks)."""
        with self._lock:
            name = self._manager.get_name(plugin)
            self._manager.unregister(plugin)
            info = next(p for p in self._plugins if f"{p.distribution}:{p.name}" == name)
            self._plugins.remove(info)
            for tuner_name in info.tuners:
                self._tuners.pop(tuner_name, None)

    def _check_free(self, tuner: type[BaseTuner]) -> None:
        _check_tuner_class(tuner)
        for name, (other, dist) in self._tuners.items():
            if name == tuner.name or _peft_type(other) == _peft_type(tuner):
                raise PluginConflictError(
                    f"cannot register {tuner.__qualname__} as {tuner.name!r} ({_peft_type(tuner)}): "
                    f"already provided by {dist} ({other.__qualname__})"
                )

    @overload
    def register_tuner(self, tuner: T) -> T: ...
    @overload
    def register_tuner(self, tuner: str) -> Callable[[T], T]: ...

    def register_tuner(self, tuner: Any) -> Any:
        """Register one tuner class: ``@register_tuner`` or ``@register_tuner("name")``."""
        if isinstance(tuner, str):
            name = tuner

            def decorate(cls: T) -> T:
                if getattr(cls, "name", name) != name:
                    raise PluginError(f"{cls.__qualname__}.name is {cls.name!r}, not {name!r}")
                cls.name = name
                return self.register_tuner(cls)

            return decorate
        self._ensure_discovered()
        with self._lock:
            self._check_free(tuner)
            module = tuner.__module__
            self._tuners[tuner.name] = (tuner, f"<in-process: {module}>")
            self._plugins.append(PluginInfo(tuner.__qualname__, f"<in-process: {module}>", tuners=[tuner.name]))
        return tuner

    def unregister_tuner(self, name: str) -> None:
        """Remove a tuner added with ``register_tuner``."""
        with self._lock:
            self._tuners.pop(name, None)
            self._plugins = [p for p in self._plugins if p.tuners != [name] or p.version is not None]

    # --- lookup ---

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen: working, broken (with ``error``) and disabled."""
        self._ensure_discovered()
        return list(self._plugins)

    def tuners(self) -> dict[str, type[BaseTuner]]:
        """Available tuners by name (clashing names are left out)."""
        self._ensure_discovered()
        return {name: cls for name, (cls, _) in self._tuners.items() if name not in self._conflicts}

    def get_tuner(self, name: str) -> type[BaseTuner]:
        """The tuner class registered as ``name``; a clear error when there is none."""
        self._ensure_discovered()
        if name in self._conflicts:
            raise PluginConflictError(self._conflicts[name])
        if name not in self._tuners:
            raise PluginError(f"no tuner named {name!r}. {self._availability()}")
        return self._tuners[name][0]

    def tuner_for_peft_type(self, peft_type: str) -> type[BaseTuner]:
        """The tuner whose config has this ``peft_type`` (e.g. "LORA")."""
        self._ensure_discovered()
        for name, (cls, _) in self._tuners.items():
            if _peft_type(cls) == peft_type:
                return self.get_tuner(name)
        raise PluginError(f"no installed plugin handles peft_type {peft_type!r}. {self._availability()}")

    def tuner_for_config(self, config: PeftConfig) -> type[BaseTuner]:
        """The tuner for a config instance."""
        tuner = self.tuner_for_peft_type(config.peft_type)
        if not isinstance(config, tuner.config_class):
            raise PluginError(
                f"{type(config).__name__} has peft_type {config.peft_type!r}, which belongs to "
                f"{tuner.config_class.__name__} of tuner {tuner.name!r}"
            )
        return tuner

    def config_classes(self) -> dict[str, type[PeftConfig]]:
        """Config classes by ``peft_type``."""
        return {_peft_type(cls): cls.config_class for cls in self.tuners().values()}

    def _availability(self) -> str:
        available = ", ".join(f"{n} ({_peft_type(c)})" for n, c in self.tuners().items()) or "none"
        broken = [f"{p.name}: {p.error}" for p in self._plugins if p.broken]
        text = f"Available tuners: {available}. Install the plugin that provides it (e.g. pip install peft-lora)."
        return text + (f" Broken plugins: {'; '.join(broken)}" if broken else "")

    # --- the layer hook ---

    def adapter_layer(
        self, tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig
    ) -> AdapterLayer | None:
        """Ask plugins for a layer wrapping ``target`` (first non-None answer wins)."""
        from peft_core.layer import AdapterLayer

        self._ensure_discovered()
        for impl in reversed(self._manager.hook.peft_adapter_layer.get_hookimpls()):
            # A failing layer hook is an error, not a skip: falling back to the tuner's own
            # layer would silently adapt the module differently from what the plugin meant.
            hint = f"; the model was not changed. Fix or uninstall the plugin, or block it with {DISABLE_ENV}"
            try:
                layer = impl.function(tuner=tuner, target=target, adapter_name=adapter_name, config=config)
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} raised in peft_adapter_layer: {exc!r} "
                    f"(asked to wrap a {type(target).__name__}){hint}"
                ) from exc
            if layer is None:
                continue
            if not isinstance(layer, AdapterLayer):
                raise PluginError(
                    f"plugin {impl.plugin_name!r} returned {type(layer).__name__} from "
                    f"peft_adapter_layer; it must return an AdapterLayer or None{hint}"
                )
            return layer
        return None


def _peft_type(tuner: type[BaseTuner]) -> str:
    return str(tuner.config_class.model_fields["peft_type"].default)


def _check_tuner_class(tuner: type[BaseTuner]) -> None:
    name = getattr(tuner, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"{tuner.__qualname__}.name must be an identifier string, got {name!r}")
    config_class = getattr(tuner, "config_class", None)
    if not (isinstance(config_class, type) and issubclass(config_class, PeftConfig)):
        raise PluginError(f"{tuner.__qualname__}.config_class must subclass PeftConfig, got {config_class!r}")
    if not isinstance(config_class.model_fields["peft_type"].default, str):
        raise PluginError(f"{config_class.__name__}.peft_type needs a default, e.g. peft_type: str = 'LORA'")


registry = PluginRegistry()
register = registry.register
register_tuner = registry.register_tuner
