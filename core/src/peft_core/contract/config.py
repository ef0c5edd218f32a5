"""Config schemas: ``PeftConfig`` (every method) and ``TargetedConfig`` (methods that wrap modules).

Field names and JSON follow the Hugging Face PEFT ``adapter_config.json``, so configs
written here load there and the other way round. A config object is never changed by
the library: preparing one for a model (``BaseTuner.prepare_config``) returns a copy.
"""

from __future__ import annotations

import enum
import json
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from peft_core.errors import ConfigError, UnknownFieldError

#: How ``PeftConfig.from_pretrained`` finds the installed plugin's class for a ``peft_type``:
#: set by the registry (the layer above) when it is imported.
config_class_resolver: Callable[[str], type[PeftConfig]] | None = None

# Keys Hugging Face PEFT writes as metadata; they carry no meaning for the adapter itself.
METADATA_KEYS = frozenset({"peft_version", "auto_mapping"})
CONFIG_NAME = "adapter_config.json"


class TaskType(str, enum.Enum):
    """The model heads Hugging Face PEFT knows (``task_type``); plain strings are accepted too."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"

    def __str__(self) -> str:
        return self.value


def is_neutral(value: Any) -> bool:
    """Null, false or empty: a feature switched off (also a settings dict with every entry off)."""
    if isinstance(value, dict) and value:
        return all(is_neutral(v) for v in value.values())
    return value is None or value is False or value in ({}, [], "")


def check_regex(value: Any) -> Any:
    """A single-string module spec is a regex: refuse one that does not compile (for validators)."""
    if isinstance(value, str) and value != "all-linear":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"{value!r} is not a valid regular expression ({exc}); give a list of names instead"
            ) from None
    return value


def _describe_error(config_class: type[BaseModel], error: ErrorDetails) -> str:
    """One line for one pydantic error: field, value, what is allowed, and the fix (no URL)."""
    field = ".".join(str(part) for part in error["loc"]) or "(config)"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across fields: its message already says what to change
        return f"{config_class.__name__}: {message}"
    top = str(error["loc"][0])
    info = config_class.model_fields.get(top)
    meaning = f" ({info.description.rstrip('.')})" if info is not None and info.description else ""
    allowed = message[0].lower() + message[1:] if message else "invalid"
    return f"{config_class.__name__}.{field}={error['input']!r} is invalid: {allowed}{meaning}; set {field} accordingly"


_HUB_ARGUMENTS = frozenset(
    {"revision", "token", "use_auth_token", "cache_dir", "force_download", "local_files_only", "proxies"}
)


class PeftConfig(BaseModel):
    """Fields every method shares. Subclasses set ``peft_type`` (with a default) and add their own."""

    # allow_inf_nan: NaN/inf hyper-parameters (JSON "NaN") would only show up as NaN outputs.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    #: Keys Hugging Face PEFT writes for features that this method does not have, with
    #: the value meaning "feature off". Written on save (for tools that expect them) and
    #: accepted on load only at that value.
    unsupported_keys: ClassVar[dict[str, Any]] = {}

    #: Keys read and ignored whatever their value: metadata, and settings that only matter
    #: for a feature that ``unsupported_keys`` already requires to be off.
    inert_keys: ClassVar[frozenset[str]] = METADATA_KEYS

    #: Config flags that other plugins implement (``use_dora`` -> "peft-dora"): when such a
    #: flag is set and no plugin takes it, the error names the distribution to install.
    variant_flags: ClassVar[Mapping[str, str]] = {}

    peft_type: str = Field(description='Method id as in adapter_config.json, e.g. "LORA".')
    task_type: str | None = Field(default=None, description="The model head (a TaskType value), e.g. 'CAUSAL_LM'.")
    inference_mode: bool = Field(default=False, description="Adapter weights are frozen.")
    base_model_name_or_path: str | None = None
    revision: str | None = None

    def __init__(self, **data: Any) -> None:
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            known = ", ".join(name for name in type(self).model_fields if name != "peft_type")
            raise UnknownFieldError(f"{type(self).__name__} got unknown arguments {unknown}; its fields are: {known}")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe_error(type(self), e) for e in exc.errors())) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe_error(type(self), e) for e in exc.errors())) from None

    @field_validator("task_type", mode="before")
    @classmethod
    def _task_value(cls, value: Any) -> Any:
        return value.value if isinstance(value, TaskType) else value

    # --- JSON in the Hugging Face adapter_config.json format ---

    def to_json_dict(self) -> dict[str, Any]:
        """The adapter_config.json content: our fields plus the unsupported keys, switched off."""
        data: dict[str, Any] = dict(self.unsupported_keys)
        data.update(self.model_dump(mode="json"))
        return dict(sorted(data.items()))

    def to_dict(self) -> dict[str, Any]:
        """As Hugging Face PEFT's ``to_dict``: the adapter_config.json content."""
        return self.to_json_dict()

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        """Build a config from adapter_config.json content (ours or Hugging Face PEFT's).

        Unsupported features are an error naming the key; keys this version does not know
        are accepted only when switched off (null/false/empty), with one warning. A
        variant flag (``variant_flags``) is kept: the tuner decides whether a plugin takes it.
        """
        known = set(cls.model_fields)
        fields: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in data.items():
            if key in known:
                fields[key] = value
            elif key in cls.inert_keys:
                continue
            elif key in cls.unsupported_keys:
                if value != cls.unsupported_keys[key] and not is_neutral(value):
                    raise ConfigError(
                        f"{cls.__name__}: {key}={value!r} asks for a feature this plugin does not "
                        f"support; only {cls.unsupported_keys[key]!r} (off) can be loaded"
                    )
            elif is_neutral(value):
                unknown.append(key)
            else:
                raise ConfigError(
                    f"{cls.__name__}: unknown key {key!r} with value {value!r}; it was probably "
                    "written by a newer version for a feature this one lacks. Upgrade the plugin, "
                    "or remove the key if the feature is not needed."
                )
        if unknown:
            warnings.warn(
                f"{cls.__name__}: ignoring unknown config keys (all switched off): {sorted(unknown)}",
                UserWarning,
                stacklevel=2,
            )
        return cls(**fields)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, subfolder: str | None = None, **hub_arguments: Any
    ) -> PeftConfig:
        """The config in ``<folder>[/subfolder]/adapter_config.json`` (a local folder).

        On ``PeftConfig`` itself the class is the installed plugin's for the file's
        ``peft_type`` (``LoraConfig`` for "LORA"); on a subclass, that class. Hugging Face
        PEFT's hub arguments (``revision``, ``token``, ``cache_dir``...) mean nothing for a
        folder and are accepted; any other keyword is a ``TypeError``.
        """
        unknown = sorted(set(hub_arguments) - _HUB_ARGUMENTS)
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected keyword arguments {unknown}")
        path = Path(pretrained_model_name_or_path) / (subfolder or "") / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc} (configs are read from local folders)") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        target = cls
        if cls is PeftConfig or "peft_type" not in cls.model_fields or cls.model_fields["peft_type"].default is None:
            if config_class_resolver is None or not isinstance(data.get("peft_type"), str):
                raise ConfigError(f"{path} has no usable peft_type: {data.get('peft_type')!r}")
            target = config_class_resolver(data["peft_type"])
        return target.from_json_dict(data)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``adapter_config.json`` into ``save_directory`` (created if needed)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n"
        (directory / CONFIG_NAME).write_text(text, encoding="utf-8")


class TargetedConfig(PeftConfig):
    """``PeftConfig`` plus the fields of methods that wrap modules (LoRA, IA3, ...).

    Every name-list field follows one rule (``peft_core.contract.matches``): a list entry
    matches a module path equal to it or ending in ``"." + entry``; a single string is a
    regex that must match the whole path; ``"all-linear"`` is every linear layer but the
    output head.
    """

    target_modules: list[str] | str | None = Field(
        default=None,
        description='Module names (suffix match on dotted paths), a full-match regex, or "all-linear".',
    )
    exclude_modules: list[str] | str | None = Field(
        default=None, description="Modules never targeted; same matching as target_modules."
    )
    modules_to_save: list[str] | None = Field(
        default=None, description="Modules trained in full and saved with the adapter (e.g. a head)."
    )
    layers_to_transform: list[int] | int | None = Field(
        default=None, description="Only target modules in these layer indices."
    )
    layers_pattern: list[str] | str | None = Field(
        default=None, description='Name of the layer list holding the index, e.g. "layers" or "h".'
    )

    @field_validator("target_modules", "exclude_modules", "modules_to_save", "layers_pattern", mode="before")
    @classmethod
    def _sets_to_sorted_lists(cls, value: Any) -> Any:
        if isinstance(value, set | frozenset | tuple):
            return sorted(value)
        return value

    @field_validator("target_modules", "exclude_modules")
    @classmethod
    def _valid_regex(cls, value: Any) -> Any:
        return check_regex(value)

    @field_validator("layers_to_transform")
    @classmethod
    def _non_negative_layers(cls, value: list[int] | int | None) -> list[int] | int | None:
        indices = [value] if isinstance(value, int) else (value or [])
        if any(i < 0 for i in indices):
            raise ValueError(f"layer indices must be >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _check_layer_selection(self) -> TargetedConfig:
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern is set but layers_to_transform is not: set both or neither")
        if self.layers_to_transform is not None and isinstance(self.target_modules, str):
            raise ValueError(
                "layers_to_transform cannot be combined with a regex target_modules: "
                "put the layer indices into the regex, or give target_modules as a list"
            )
        return self
