"""``OFTConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "OFT")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from peft_core.contract import TargetedConfig


class OFTConfig(TargetedConfig):
    """Orthogonal fine-tuning: each target sees its input rotated, ``y = W (R x) + b``.

    ``R`` is block-diagonal: ``r`` blocks of ``oft_block_size`` (give one of the two, the
    other is ``in_features / it``), each the Cayley transform of a skew-symmetric matrix
    ``Q`` whose upper triangle is the trained parameter (zero at init: ``R = I``).
    """

    peft_type: Literal["OFT"] = "OFT"
    r: int = Field(default=0, ge=0, description="Number of blocks per layer (0: derived from oft_block_size).")
    oft_block_size: int = Field(default=32, ge=0, description="Block size (0: derived from r).")
    module_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="In training, this share of the blocks is replaced by identity."
    )
    fan_in_fan_out: bool = Field(default=False, description="Base weight stored (in, out); OFT layers are nn.Linear.")
    bias: Literal["none", "all", "oft_only"] = Field(
        default="none", description="Which biases train with the adapter: none, all, or those of adapted layers."
    )
    init_weights: bool = Field(default=True, description="True: Q = 0 (R = I, the base model); False: random Q.")
    coft: bool = Field(default=False, description="Constrained OFT: keep each block's Q within eps of zero.")
    eps: float = Field(default=6e-5, gt=0.0, description="COFT's radius (only with coft=True).")
    block_share: bool = Field(default=False, description="All blocks of a layer share one rotation.")
    use_cayley_neumann: bool = Field(
        default=True, description="Approximate the Cayley inverse by a Neumann series (False: exact solve)."
    )
    num_cayley_neumann_terms: int = Field(default=5, ge=1, description="Terms of the Neumann series.")

    @model_validator(mode="after")
    def _one_size(self) -> OFTConfig:
        if (self.r == 0) == (self.oft_block_size == 0):
            raise ValueError(
                f"give exactly one of r ({self.r}) and oft_block_size ({self.oft_block_size}), the other 0: "
                "r * oft_block_size is the layer's input size"
            )
        return self
