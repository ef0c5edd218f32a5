"""``PeftConfig``: the pydantic schema of the fields every PEFT method shares.

Field names and JSON follow the Hugging Face PEFT ``adapter_config.json``, so configs
written here load there and the other way round.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from peft_core.errors import ConfigError

# Keys Hugging Face PEFT writes as metadata; they carry no meaning for the adapter itself.
METADATA_KEYS = frozenset({"peft_version", "auto_mapping"})


def _is_neutral(value: Any) -> bool:
    """Null, false or empty: a feature switched off (also a settings dict with every entry off)."""
    if isinstance(value, dict) and value:
        return all(_is_neutral(v) for v in value.values())
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


class PeftConfig(BaseModel):
    """Fields shared by every method. Subclasses set ``peft_type`` and add their own."""

    # allow_inf_nan: NaN/inf hyper-parameters (JSON "NaN") would only show up as NaN outputs.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    #: Keys Hugging Face PEFT writes for features that this method does not have, with
    #: the value meaning "feature off". Written on save (for tools that expect them) and
    #: accepted on load only at that value.
    unsupported_keys: ClassVar[dict[str, Any]] = {}

    #: Keys read and ignored whatever their value: metadata, and settings that only matter
    #: for a feature that ``unsupported_keys`` already requires to be off.
    inert_keys: ClassVar[frozenset[str]] = METADATA_KEYS

    peft_type: str = Field(description='Method id as in adapter_config.json, e.g. "LORA".')
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
    inference_mode: bool = Field(default=False, description="Adapter weights are frozen.")
    base_model_name_or_path: str | None = None
    revision: str | None = None
    task_type: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {type(self).__name__}: {exc}") from None

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
    def _check_layer_selection(self) -> PeftConfig:
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern is set but layers_to_transform is not: set both or neither")
        if self.layers_to_transform is not None and isinstance(self.target_modules, str):
            raise ValueError(
                "layers_to_transform cannot be combined with a regex target_modules: "
                "put the layer indices into the regex, or give target_modules as a list"
            )
        return self

    # --- JSON in the Hugging Face adapter_config.json format ---

    def to_json_dict(self) -> dict[str, Any]:
        """The adapter_config.json content: our fields plus the unsupported keys, switched off."""
        data: dict[str, Any] = dict(self.unsupported_keys)
        data.update(self.model_dump(mode="json"))
        return dict(sorted(data.items()))

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        """Build a config from adapter_config.json content (ours or Hugging Face PEFT's).

        Unsupported features are an error naming the key; keys this version does not know
        are accepted only when switched off (null/false/empty), with one warning.
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
                if value != cls.unsupported_keys[key] and not _is_neutral(value):
                    raise ConfigError(
                        f"{cls.__name__}: {key}={value!r} asks for a feature this plugin does not "
                        f"support; only {cls.unsupported_keys[key]!r} (off) can be loaded"
                    )
            elif _is_neutral(value):
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
