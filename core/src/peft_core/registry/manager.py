"""The tuner registry: filled lazily from installed plugins, isolated from broken ones.

Plugins are pluggy plugins (entry-point group ``peft_core.plugins``). Discovery loads
every entry point, registers them all, lets each declare its own hookspecs
(``peft_add_hookspecs``), then checks every hook implementation against
its spec and collects the tuners; a plugin failing any step is reported and left out.
Hooks are called through ``self.hook`` (pluggy's ``pm.hook``)."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pluggy
from importlib_metadata import entry_points
from torch import nn

from peft_core.contract import config as config_module
from peft_core.contract import hookspecs
from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import AdapterLayer
from peft_core.contract.tuner import BaseTuner
from peft_core.errors import PluginConflictError, PluginError
from peft_core.registry.catalogue import PluginInfo, install_hint

if TYPE_CHECKING:
    from types import TracebackType

ENTRY_POINT_GROUP = "peft_core.plugins"
DISABLE_ENV = "PEFT_CORE_DISABLE_PLUGINS"
STRICT_ENV = "PEFT_CORE_STRICT_PLUGINS"

T = TypeVar("T", bound="type[BaseTuner]")


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


class PluginRegistry:
    """Tuners by name and by ``peft_type``, and the plugins that provided them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every plugin; the next use discovers the installed ones again (tests, notebooks)."""
        self._discovered = False
        self._manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._manager.add_hookspecs(hookspecs)
        self._plugins: list[PluginInfo] = []
        self._tuners: dict[str, tuple[type[BaseTuner], str]] = {}  # name -> (class, distribution)
        self._conflicts: dict[str, str] = {}  # tuner name -> message

    # --- discovery ---

    @property
    def hook(self) -> Any:
        """pluggy's hook caller: ``registry.hook.<hook name>(**kwargs)``."""
        self._ensure_discovered()
        return self._manager.hook

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        self._ensure_discovered()
        return self._manager

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            blocked = _env_list(DISABLE_ENV)
            loaded: list[tuple[object, PluginInfo]] = []
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else "<unknown>"
                version = ep.dist.version if ep.dist is not None else None
                if ep.name in blocked or dist in blocked:
                    self._plugins.append(PluginInfo(ep.name, dist, version, disabled=True))
                    continue
                info = PluginInfo(ep.name, dist, version)
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken plugin must not break the others
                    self._report_broken(info, f"import failed: {exc!r}")
                    continue
                try:
                    self._manager.register(plugin, name=_plugin_id(info))
                except Exception as exc:  # wrong hook signatures
                    self._report_broken(info, f"does not meet the hook contract: {exc}")
                    continue
                loaded.append((plugin, info))
            # Every plugin declares its hooks before any is checked: a variant may load before its base.
            declared = []
            for plugin, info in loaded:
                try:
                    self._call_one(plugin, "peft_add_hookspecs", plugin_manager=self._manager)
                except Exception as exc:
                    self._drop(plugin, info, f"peft_add_hookspecs raised {exc!r}")
                    continue
                declared.append((plugin, info))
            for plugin, info in declared:
                try:
                    tuners = self._checked_tuners(plugin)
                except PluginError as exc:
                    self._drop(plugin, info, str(exc))
                    continue
                for tuner in tuners:
                    self._add_tuner(tuner, info.distribution)
                    info.tuners.append(tuner.name)
                self._plugins.append(info)

    def _call_one(self, plugin: object, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call one plugin's implementation of a hook, as a list of results (so that a failure or
        a wrong result is that plugin's, not the whole hook's)."""
        caller = getattr(self._manager.hook, hook_name)
        return [impl.function(**kwargs) for impl in caller.get_hookimpls() if impl.plugin is plugin]

    def _checked_tuners(self, plugin: object) -> list[type[BaseTuner]]:
        """A registered plugin's tuners, after checking its hooks against the specs."""
        unknown = sorted(caller.name for caller in self._manager.get_hookcallers(plugin) or [] if not caller.has_spec())
        if unknown:
            raise PluginError(f"does not meet the hook contract: no hook named {unknown} exists (a typo?)")
        try:
            results = self._call_one(plugin, "peft_tuners")
        except Exception as exc:
            raise PluginError(f"peft_tuners raised {exc!r}") from exc
        tuners: list[type[BaseTuner]] = []
        for result in results:
            if not isinstance(result, list | tuple):
                raise PluginError(f"peft_tuners must return a list of BaseTuner classes, got {type(result).__name__}")
            for tuner in result:
                if not (isinstance(tuner, type) and issubclass(tuner, BaseTuner)):
                    raise PluginError(f"peft_tuners returned {tuner!r}, which is not a BaseTuner subclass")
                _check_tuner_class(tuner)
                tuners.append(tuner)
        return tuners

    def _drop(self, plugin: object, info: PluginInfo, reason: str) -> None:
        if self._manager.is_registered(plugin):
            self._manager.unregister(plugin)
        self._report_broken(info, reason)

    def _report_broken(self, info: PluginInfo, reason: str) -> None:
        info.error = reason
        self._plugins.append(info)
        message = f"peft-core plugin {info.name!r} ({info.distribution}) is broken and was skipped: {reason}"
        if os.environ.get(STRICT_ENV, "") not in ("", "0"):
            raise PluginError(message + f" ({STRICT_ENV} is set)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)

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
            try:
                self._manager.register(plugin, name=_plugin_id(info))
            except Exception as exc:
                raise PluginError(f"plugin {info.name!r} does not meet the hook contract: {exc}") from exc
            try:
                self._call_one(plugin, "peft_add_hookspecs", plugin_manager=self._manager)
                tuners = self._checked_tuners(plugin)
                for tuner in tuners:
                    self._check_free(tuner)
            except Exception as exc:
                self._manager.unregister(plugin)
                if isinstance(exc, PluginConflictError):
                    raise
                raise PluginError(f"plugin {info.name!r} {exc}") from exc
            for tuner in tuners:
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
            raise PluginError(f"no tuner named {name!r}. {self._availability(name.upper())}")
        return self._tuners[name][0]

    def tuner_for_peft_type(self, peft_type: str) -> type[BaseTuner]:
        """The tuner whose config has this ``peft_type`` (e.g. "LORA")."""
        self._ensure_discovered()
        for name, (cls, _) in self._tuners.items():
            if _peft_type(cls) == peft_type:
                return self.get_tuner(name)
        raise PluginError(f"no installed plugin handles peft_type {peft_type!r}. {self._availability(peft_type)}")

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

    def conflicts(self) -> list[str]:
        """Messages for tuner names or peft_types that two plugins claim (none usable)."""
        self._ensure_discovered()
        return sorted(set(self._conflicts.values()))

    def new_tuner(self, config: PeftConfig) -> BaseTuner:
        """An instance of the tuner for ``config``, with the plugin hooks at hand (``tuner.hooks``)."""
        return self.tuner_for_config(config)(hooks=self.hook)

    def _availability(self, peft_type: str | None = None) -> str:
        available = ", ".join(f"{n} ({_peft_type(c)})" for n, c in self.tuners().items()) or "none"
        broken = [f"{p.name}: {p.error}" for p in self._plugins if p.broken]
        text = f"Available tuners: {available}. Install the plugin that provides it: {install_hint(peft_type)}."
        return text + (f" Broken plugins: {'; '.join(broken)}" if broken else "")

    # --- the layer hook ---

    def adapter_layer(
        self, tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig
    ) -> AdapterLayer | None:
        """Ask plugins for a layer wrapping ``target`` (``peft_adapter_layer``; first non-None wins).

        A failing layer hook is an error, not a skip: falling back to the tuner's own layer
        would silently adapt the module differently from what the plugin meant.
        """
        hook = self.hook.peft_adapter_layer
        hint = f"; the model was not changed. Fix or uninstall the plugin, or block it with {DISABLE_ENV}"
        try:
            layer = hook(tuner=tuner, target=target, adapter_name=adapter_name, config=config)
        except Exception as exc:
            culprit = _raising_plugin(hook.get_hookimpls(), exc.__traceback__)
            raise PluginError(
                f"plugin {culprit!r} raised in peft_adapter_layer: {exc!r} "
                f"(asked to wrap a {type(target).__name__}){hint}"
            ) from exc
        if layer is not None and not isinstance(layer, AdapterLayer):
            # Which plugin: the first in pluggy's call order that answers (asked again, on this error path only).
            kwargs = {"tuner": tuner, "target": target, "adapter_name": adapter_name, "config": config}
            culprit = next(
                (i.plugin_name for i in reversed(hook.get_hookimpls()) if i.function(**kwargs) is not None), "?"
            )
            raise PluginError(
                f"plugin {culprit!r} returned {type(layer).__name__} from peft_adapter_layer; it must return an "
                f"AdapterLayer or None{hint}"
            )
        return layer


def _plugin_id(info: PluginInfo) -> str:
    return f"{info.distribution}:{info.name}"


def _raising_plugin(impls: list[Any], traceback: TracebackType | None) -> str:
    """The plugin whose hook implementation is the innermost frame of ``traceback`` that is one."""
    codes = {impl.function.__code__: impl.plugin_name for impl in impls if hasattr(impl.function, "__code__")}
    found = "<unknown>"
    while traceback is not None:
        found = codes.get(traceback.tb_frame.f_code, found)
        traceback = traceback.tb_next
    return found


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
config_module.config_class_resolver = lambda peft_type: registry.tuner_for_peft_type(peft_type).config_class
register = registry.register
register_tuner = registry.register_tuner
