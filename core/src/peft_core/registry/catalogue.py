"""What the registry knows besides the plugins: where each catalogue method lives, and the
listing entry of one plugin."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Where each method of Hugging Face PEFT's catalogue lives, by peft_type and config
#: class: errors for a method that is not installed name the distribution to install.
DISTRIBUTIONS = {
    "LORA": ("peft-lora", "LoraConfig"),
    "IA3": ("peft-ia3", "IA3Config"),
    "LOHA": ("peft-loha", "LoHaConfig"),
    "LOKR": ("peft-lokr", "LoKrConfig"),
    "OFT": ("peft-oft", "OFTConfig"),
    "ADALORA": ("peft-adalora", "AdaLoraConfig"),
    "PROMPT_TUNING": ("peft-prompt-tuning", "PromptTuningConfig"),
    "PREFIX_TUNING": ("peft-prefix-tuning", "PrefixTuningConfig"),
    "P_TUNING": ("peft-p-tuning", "PromptEncoderConfig"),
}


def install_hint(peft_type: str | None = None, config_class: str | None = None) -> str:
    """``pip install <distribution>`` for a method of the catalogue, or a generic hint."""
    for known_type, (distribution, class_name) in DISTRIBUTIONS.items():
        if peft_type == known_type or config_class == class_name:
            return f"pip install {distribution}"
    return "pip install the plugin that provides it (peft-core plugins lists what is installed)"


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
