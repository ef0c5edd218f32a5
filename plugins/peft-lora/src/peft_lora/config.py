"""``LoraConfig``: the LoRA hyper-parameters, named as in Hugging Face PEFT's adapter_config.json."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from peft_core.contract import PeftConfig, TargetedConfig

_INITIALISATIONS = re.compile(r"gaussian|orthogonal|olora|pissa|pissa_niter_\d+")
ALLOWED_INITIALISATIONS = (
    "true, false, 'gaussian', 'orthogonal', 'pissa', 'pissa_niter_[n]' (e.g. 'pissa_niter_4'), 'olora'"
)
# Hugging Face PEFT initialisations that need calibration data or a quantizer.
_NEEDS_DATA = frozenset({"eva", "corda", "loftq", "lora_ga", "mica"})


class LoraConfig(TargetedConfig):
    """Low-rank adaptation: ``h = W x + (lora_alpha / r) * B A x`` on each target.

    ``A`` is (r, in) and ``B`` is (out, r); ``B`` starts at zero so the model starts as
    the base model. With ``use_rslora`` the scale is ``lora_alpha / sqrt(r)``.
    """

    unsupported_keys: ClassVar[dict[str, Any]] = {
        "alora_invocation_tokens": None,
        "arrow_config": None,
        "corda_config": None,
        "eva_config": None,
        "kasa_config": None,
        "layer_replication": None,
        "loftq_config": {},
        "lora_ga_config": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "monteclora_config": None,
        "qalora_group_size": 16,
        "use_bdlora": None,
        "use_qalora": False,
        "velora_config": None,
    }
    # Settings of features that must be off anyway (Megatron, QALoRA), and runtime_config
    # (written by PEFT 0.12-0.13: how to run, not what the adapter computes).
    #: Flags that LoRA variants implement (through the ``peft_lora_variant`` hook), and the
    #: distribution that provides each: set without it installed, the flag is one clear error.
    variant_flags: ClassVar[Mapping[str, str]] = {"use_dora": "peft-dora", "lora_bias": "peft-lora"}
    inert_keys: ClassVar[frozenset[str]] = PeftConfig.inert_keys | {
        "megatron_core",
        "qalora_group_size",
        "runtime_config",
    }

    peft_type: Literal["LORA"] = "LORA"
    r: int = Field(default=8, gt=0, description="Rank of the update (rows of A, columns of B).")
    lora_alpha: int | float = Field(default=8, description="Scale numerator: the update is scaled by alpha / r.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input, in [0, 1).")
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none", description="Which biases train with the adapter: none, all, or those of adapted layers."
    )
    fan_in_fan_out: bool = Field(
        default=False, description="Base weight is stored (in, out), as in GPT-2's Conv1D (set automatically)."
    )
    use_rslora: bool = Field(default=False, description="Scale by alpha / sqrt(r) (rank-stabilised LoRA).")
    init_lora_weights: bool | str = Field(
        default=True,
        description=(
            "True: A Kaiming-uniform, B zero; 'gaussian': A normal with std 1/r, B zero; False: both random; "
            "'orthogonal': orthogonal halves (even r); 'pissa', 'pissa_niter_[n]', 'olora': split off from the "
            "base weight, which keeps the rest"
        ),
    )
    use_dora: bool = Field(
        default=False, description="Weight-decomposed LoRA (DoRA): a learned magnitude per output row (peft-dora)."
    )
    lora_bias: bool = Field(
        default=False,
        description="B gets a trained bias: h = W x + b + s (B A x + b_B); Linear and conv targets only",
    )
    target_parameters: list[str] | None = Field(
        default=None,
        description=(
            "Bare parameters that take LoRA directly, by path suffix (e.g. 'experts.gate_up_proj' of MoE experts); "
            "set target_modules=[] to adapt no module besides"
        ),
    )
    trainable_token_indices: list[int] | dict[str, list[int]] | None = Field(
        default=None,
        description=(
            "Embedding rows (token ids) trained in full beside the adapter: a list for the input embedding, or "
            "{layer name: ids}"
        ),
    )
    ensure_weight_tying: bool = Field(
        default=False,
        description="An output head tied to the input embedding takes the embedding's LoRA factors (transposed)",
    )
    rank_pattern: dict[str, int] = Field(
        default_factory=dict, description="Per-module rank: module name (suffix) or regex -> r."
    )
    alpha_pattern: dict[str, int | float] = Field(
        default_factory=dict, description="Per-module alpha: module name (suffix) or regex -> lora_alpha."
    )

    @field_validator("init_lora_weights", mode="before")
    @classmethod
    def _known_initialisation(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and _INITIALISATIONS.fullmatch(value)):
            return value
        needs = (
            " (it needs data or a quantizer, which peft-lora does not implement)"
            if isinstance(value, str) and value in _NEEDS_DATA
            else ""
        )
        raise ValueError(f"unknown initialisation{needs}; allowed: {ALLOWED_INITIALISATIONS}")

    @model_validator(mode="after")
    def _lora_bias_combinations(self) -> LoraConfig:
        if self.lora_bias and self.init_lora_weights not in (True, False):
            raise ValueError(
                f"lora_bias=True needs init_lora_weights True or False (as in Hugging Face PEFT), got "
                f"{self.init_lora_weights!r}; set lora_bias=False or change init_lora_weights"
            )
        if self.lora_bias and self.use_dora:
            raise ValueError("lora_bias=True cannot be combined with use_dora=True (as in Hugging Face PEFT); drop one")
        return self

    @field_validator("target_parameters", mode="before")
    @classmethod
    def _parameter_names(cls, value: Any) -> Any:
        if isinstance(value, set | frozenset | tuple):
            value = sorted(value)
        if isinstance(value, list) and not all(isinstance(e, str) and e and not e.endswith(".") for e in value):
            raise ValueError("give parameter paths such as 'experts.gate_up_proj' (non-empty strings)")
        return value

    @field_validator("trainable_token_indices")
    @classmethod
    def _token_ids(cls, value: list[int] | dict[str, list[int]] | None) -> list[int] | dict[str, list[int]] | None:
        lists = value.values() if isinstance(value, dict) else [value] if value is not None else []
        if any(not ids or any(i < 0 for i in ids) for ids in lists) or (isinstance(value, dict) and "" in value):
            raise ValueError("give non-empty lists of token ids >= 0 (by layer name for a dict), e.g. [32000, 32001]")
        return value

    @model_validator(mode="after")
    def _parameter_targets_combinations(self) -> LoraConfig:
        if not self.target_parameters:
            return self
        clashes = {
            "lora_dropout": self.lora_dropout != 0,  # the input of a parameter's product is not seen
            "lora_bias": self.lora_bias,
            "use_dora": self.use_dora,
            "init_lora_weights": self.init_lora_weights not in (True, False, "gaussian"),
        }
        wrong = [field for field, clash in clashes.items() if clash]
        if wrong:
            raise ValueError(
                f"target_parameters cannot be combined with {', '.join(f'{f}={getattr(self, f)!r}' for f in wrong)} "
                "(as in Hugging Face PEFT); use lora_dropout=0, lora_bias=False, use_dora=False and "
                "init_lora_weights True, False or 'gaussian'"
            )
        return self

    @model_validator(mode="after")
    def _even_ranks_for_orthogonal(self) -> LoraConfig:
        if self.init_lora_weights == "orthogonal":
            odd = {key: r for key, r in {"r": self.r, **self.rank_pattern}.items() if r % 2}
            if odd:
                raise ValueError(
                    f"init_lora_weights='orthogonal' splits each rank in two halves, but these ranks are odd: {odd}; "
                    "use even ranks (r, rank_pattern) or another init_lora_weights"
                )
        return self

    @field_validator("rank_pattern")
    @classmethod
    def _positive_ranks(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {key: r for key, r in value.items() if r <= 0}
        if bad:
            raise ValueError(f"ranks must be > 0, got {bad}")
        return value

    def scaling(self) -> float:
        """The factor applied to ``B A x``."""
        return float(self.lora_alpha) / (self.r**0.5 if self.use_rslora else self.r)
