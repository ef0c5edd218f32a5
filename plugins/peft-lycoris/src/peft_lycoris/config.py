"""``LycorisConfig``: the fields LoHa and LoKr share, named as in Hugging Face PEFT's adapter_config.json."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from peft_core.contract import TargetedConfig


class LycorisConfig(TargetedConfig):
    """A structured weight update ``delta W`` (scaled by ``alpha / r``) added to each target's weight.

    The subclasses say how ``delta W`` is built (Hadamard or Kronecker products of factors).
    """

    r: int = Field(default=8, gt=0, description="Rank of the factors.")
    alpha: int | float = Field(default=8, description="Scale numerator: the update is scaled by alpha / r.")
    rank_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="In training, each output row of the update is dropped with this p."
    )
    module_dropout: float = Field(
        default=0.0, ge=0.0, le=1.0, description="In training, the whole adapter is skipped with this probability."
    )
    use_effective_conv2d: bool = Field(
        default=False, description="Conv kernels > 1: a CP-decomposed kernel (FedPara's proposition 3)."
    )
    rank_pattern: dict[str, PositiveInt] = Field(
        default_factory=dict, description="Per-module rank: module name (suffix) or regex -> r."
    )
    alpha_pattern: dict[str, int | float] = Field(
        default_factory=dict, description="Per-module alpha: module name (suffix) or regex -> alpha."
    )

    def scaling(self) -> float:
        """The factor applied to the structured product: ``alpha / r``."""
        return float(self.alpha) / self.r
