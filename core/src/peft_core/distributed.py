"""Deprecated path: use ``peft_core.integrations.distributed`` (this alias goes in the next release)."""

from __future__ import annotations

import warnings

from peft_core.integrations.distributed import *  # noqa: F403
from peft_core.integrations.distributed import __all__  # noqa: F401

warnings.warn(
    "peft_core.distributed moved to peft_core.integrations.distributed; the old path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
