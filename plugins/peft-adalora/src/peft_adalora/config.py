"""``AdaLoraConfig``: AdaLoRA's hyper-parameters and budget schedule, named as in Hugging Face PEFT.

The JSON is the incumbent's adapter_config.json for ``peft_type: "ADALORA"`` (an
``AdaLoraConfig`` there is a ``LoraConfig`` subclass, so it carries LoRA's keys too; the
ones AdaLoRA ignores or does not support are listed in ``unsupported_keys``).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from peft_core.contract import PeftConfig, TargetedConfig

#: Suffix of a rank_pattern key after the module path (Hugging Face PEFT names the ``lora_E`` parameter).
RANK_KEY = "lora_E"


class AdaLoraConfig(TargetedConfig):
    """AdaLoRA: ``h = W x + lora_alpha / (init_r + 1e-5) * B diag(E) A x`` with a rank budget.

    ``A`` is (r, in), ``E`` (r, 1) and ``B`` (out, r): an SVD-like triplet per rank. During
    training, ``update_and_allocate(step)`` scores each triplet's importance and zeroes the
    ``E`` entries of the least important ones until the average rank falls from ``init_r``
    to ``target_r``: no pruning up to step ``tinit``, a cubic decrease of the budget until
    step ``total_step - tfinal``, then the ranks are fixed (docs/adalora.md gives numbers).
    ``rank_pattern`` records which triplets survive; a saved adapter keeps only those.
    """

    unsupported_keys: ClassVar[dict[str, Any]] = {
        "alora_invocation_tokens": None,
        "alpha_pattern": {},
        "arrow_config": None,
        "corda_config": None,
        "ensure_weight_tying": False,
        "eva_config": None,
        "kasa_config": None,
        "layer_replication": None,
        "loftq_config": {},
        "lora_bias": False,
        "lora_ga_config": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "monteclora_config": None,
        "qalora_group_size": 16,
        "target_parameters": None,
        "trainable_token_indices": None,
        "use_bdlora": None,
        "use_dora": False,
        "use_qalora": False,
        "use_rslora": False,
        "velora_config": None,
    }
    # Settings of features that must be off anyway, and runtime_config (how to run, not what
    # the adapter computes).
    inert_keys: ClassVar[frozenset[str]] = PeftConfig.inert_keys | {
        "megatron_core",
        "qalora_group_size",
        "runtime_config",
    }

    peft_type: Literal["ADALORA"] = "ADALORA"
    init_r: int = Field(default=12, gt=0, description="Rank of every triplet set at the start (rows of A).")
    target_r: int = Field(default=8, ge=0, description="Average rank per module when the budget schedule ends.")
    tinit: int = Field(default=0, ge=0, description="Warm-up steps before any rank is pruned.")
    tfinal: int = Field(default=0, ge=0, description="Final steps with the ranks fixed (the schedule ends before).")
    deltaT: int = Field(  # noqa: N815 - Hugging Face PEFT's key
        default=1, ge=1, description="Steps between two rank allocations during the budget schedule."
    )
    beta1: float = Field(default=0.85, gt=0.0, lt=1.0, description="EMA factor of the importance (sensitivity).")
    beta2: float = Field(default=0.85, gt=0.0, lt=1.0, description="EMA factor of the importance's uncertainty.")
    orth_reg_weight: float = Field(
        default=0.5, ge=0.0, description="Weight of the orthogonality regulariser added to the training loss."
    )
    total_step: int | None = Field(
        default=None,
        validate_default=True,
        description="Number of optimizer steps of the training; the budget schedule is laid out over it.",
    )
    rank_pattern: dict[str, list[bool]] | None = Field(
        default=None,
        description="Which triplets survive, by '<module path>.lora_E' (written by the allocation; read on load).",
    )
    r: int = Field(default=8, gt=0, description="Unused by AdaLoRA (init_r is the rank); kept for the JSON format.")
    lora_alpha: int | float = Field(default=8, description="Scale numerator: the update is scaled by alpha / init_r.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input, in [0, 1).")
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none", description="Which biases train with the adapter: none, all, or those of adapted layers."
    )
    fan_in_fan_out: bool = Field(
        default=False, description="Base weight is stored (in, out), as in GPT-2's Conv1D (set automatically)."
    )
    init_lora_weights: bool | Literal["gaussian"] = Field(
        default=True,
        description="True (or 'gaussian', the same for AdaLoRA): E zero, A and B normal(0, 0.02); False: all random.",
    )

    @field_validator("total_step")
    @classmethod
    def _total_step_given(cls, value: int | None) -> int:
        if value is None or value <= 0:
            raise ValueError(
                "it must be given: AdaLoRA lays its rank budget schedule out over the optimizer steps of the "
                "training; give total_step > 0"
            )
        return value

    @field_validator("r")
    @classmethod
    def _r_unused(cls, value: int) -> int:
        if value != 8:
            warnings.warn(
                f"AdaLoraConfig: r={value} is not used by AdaLoRA (as in Hugging Face PEFT); the rank is init_r",
                UserWarning,
                stacklevel=2,
            )
        return value

    @model_validator(mode="after")
    def _schedule_has_a_budget_phase(self) -> AdaLoraConfig:
        total = self.total_step
        if total is not None and self.tinit >= total - self.tfinal:
            raise ValueError(
                f"tinit={self.tinit}, tfinal={self.tfinal} and total_step={total} leave no budget phase: ranks are "
                f"pruned between step tinit and step total_step - tfinal, so tinit < total_step - tfinal is needed; "
                "lower tinit or tfinal, or raise total_step"
            )
        return self


def rank_mask(rank_pattern: dict[str, list[bool]] | None, module_path: str) -> list[bool] | None:
    """The surviving triplets of the module at ``module_path``, or None when the pattern has none.

    Keys are ``<module path>.lora_E`` (as saved) or, as the incumbent holds them in memory
    before saving, ``<module path>.lora_E.<adapter name>``.
    """
    if not rank_pattern:
        return None
    key = f"{module_path}.{RANK_KEY}" if module_path else RANK_KEY
    found = rank_pattern.get(key)
    if found is not None:
        return found
    return next((mask for name, mask in rank_pattern.items() if name.rpartition(".")[0] == key), None)
