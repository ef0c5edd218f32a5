"""``IA3Config``, named as in Hugging Face PEFT's adapter_config.json (peft_type "IA3")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from peft_core.contract import PeftConfig, TargetedConfig, check_regex


class IA3Config(TargetedConfig):
    """IA3: ``y = l * (W x)`` for a target, ``y = W (l * x)`` for a feed-forward target.

    ``l`` is one learned vector per target (ones at init, so the model starts as the base
    model): output-sized for plain targets, input-sized for ``feedforward_modules``.
    """

    peft_type: Literal["IA3"] = "IA3"
    feedforward_modules: list[str] | str | None = Field(
        default=None, description="Targets whose input (not output) is rescaled; a subset of target_modules."
    )
    fan_in_fan_out: bool = Field(
        default=False, description="Base weight is stored (in, out), as in GPT-2's Conv1D (set automatically)."
    )
    init_ia3_weights: bool = Field(default=True, description="True: start at ones (the base model); False: random.")

    @field_validator("feedforward_modules", mode="before")
    @classmethod
    def _ff_sets_to_lists(cls, value: object) -> object:
        return sorted(value) if isinstance(value, set | frozenset | tuple) else check_regex(value)

    @model_validator(mode="after")
    def _feedforward_within_targets(self) -> IA3Config:
        ff, targets = self.feedforward_modules, self.target_modules
        if isinstance(ff, list) and isinstance(targets, list) and ff:
            outside = sorted(set(ff) - set(targets))
            if outside:
                raise ValueError(f"feedforward_modules must be a subset of target_modules; not targets: {outside}")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        # Hugging Face PEFT's IA3Config has no layer selection: leave those keys out unless
        # used, so that it reads our adapters without an "unexpected keys" warning.
        data = super().to_json_dict()
        for key in ("layers_to_transform", "layers_pattern"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        """As ``PeftConfig.from_json_dict``, reading Hugging Face PEFT's default feed-forward lists.

        Hugging Face PEFT fills ``feedforward_modules`` from a per-architecture table even
        for modules that are not targets (``["mlp.c_proj"]`` with targets ``["c_attn"]``);
        such entries change nothing there, so they are dropped here.
        """
        ff, targets = data.get("feedforward_modules"), data.get("target_modules")
        if isinstance(ff, list) and isinstance(targets, list) and all(isinstance(e, str) for e in ff + targets):
            kept = [entry for entry in ff if any(_overlap(entry, target) for target in targets)]
            data = {**data, "feedforward_modules": kept}
        return super().from_json_dict(data)


def _overlap(a: str, b: str) -> bool:
    """Whether two name-list entries can select the same module (one is a dotted suffix of the other)."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)
