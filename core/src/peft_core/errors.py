"""Error types: every failure the library reports is a ``PeftError`` subclass."""

from __future__ import annotations


class PeftError(Exception):
    """Base class of all errors raised by peft-core and its plugins."""


class ConfigError(PeftError, ValueError):
    """A config value is invalid or asks for a feature that is not available."""


class UnknownFieldError(ConfigError, TypeError):
    """A config was given a keyword it has no field for (``TypeError``, as a dataclass raises)."""


class TargetNotFoundError(PeftError, ValueError):
    """A module name or pattern in a config matched no module of the model."""


class AdapterNotFoundError(PeftError, ValueError):
    """An adapter name the model does not hold (``ValueError``, as Hugging Face PEFT raises)."""


class PluginError(PeftError):
    """A plugin failed to load, broke the hook contract, or is unknown."""


class PluginNotInstalledError(PluginError, ImportError):
    """A method of the catalogue is used (imported, loaded) but its plugin is not installed."""


class PluginConflictError(PluginError):
    """Two plugins claim the same tuner name or ``peft_type``."""


class AdapterLoadError(PeftError):
    """A checkpoint does not fit the model; nothing was changed."""


class AdapterSaveError(PeftError):
    """An adapter could not be written; any previous checkpoint is intact."""


class MergeError(PeftError):
    """A merge or unmerge could not be done; weights are as they were."""
