"""``LoKrConfig``, named as in Hugging Face PEFT's adapter_config.json (peft_type "LOKR")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from peft_lycoris import LycorisConfig


class LoKrConfig(LycorisConfig):
    """Low-rank Kronecker product: ``delta W = kron(w1, w2) * alpha / r``.

    With ``out = a * b`` and ``in = c * d`` (each split near its square root, or by
    ``decompose_factor``), ``w1`` is (a, c) and ``w2`` is (b, d); a factor is a rank-``r``
    product ``w_a w_b`` when ``r`` is below half its larger side (``w1`` only with
    ``decompose_both``). ``w1`` starts at zero (``init_weights=True``; "lycoris": ``w2``).
    """

    peft_type: Literal["LOKR"] = "LOKR"
    decompose_both: bool = Field(default=False, description="Also split w1 into a rank-r product.")
    decompose_factor: int = Field(
        default=-1, description="Split each dimension as (factor, dim / factor); -1: near the square root."
    )
    rank_dropout_scale: bool = Field(default=False, description="Rescale kept rows by 1 / kept share in rank dropout.")
    init_weights: bool | Literal["lycoris"] = Field(
        default=True, description="True: w1 starts at zero; 'lycoris': w2 starts at zero; False: all random."
    )

    @field_validator("init_weights", mode="before")
    @classmethod
    def _known_initialisation(cls, value: object) -> object:
        if not isinstance(value, bool) and value != "lycoris":
            raise ValueError("allowed are true, false and 'lycoris'")
        return value


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into ``(m, n)``, ``m * n = dimension``, as Hugging Face PEFT (and LyCORIS) do.

    ``factor`` > 0 dividing ``dimension``: ``(factor, dimension / factor)``. Otherwise the
    divisor pair closest to the square root (``m <= n``), with ``m`` at most ``factor``
    unless ``factor`` is -1: ``factorization(512) == (16, 32)``, ``(127) == (1, 127)``.
    """
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        step = next(k for k in range(m + 1, dimension + 1) if dimension % k == 0)
        if step > limit:
            break
        m, n = step, dimension // step
    return (m, n) if m <= n else (n, m)
