"""Deprecated path: use ``peft_core.integrations.fsdp`` (this alias goes in the next release)."""

from __future__ import annotations

import warnings

from peft_core.integrations.fsdp import *  # noqa: F403
from peft_core.integrations.fsdp import __all__  # noqa: F401

warnings.warn(
    "peft_core.fsdp moved to peft_core.integrations.fsdp; the old path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
