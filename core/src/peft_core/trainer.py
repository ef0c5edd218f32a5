"""Deprecated path: use ``peft_core.integrations.trainer`` (this alias goes in the next release)."""

from __future__ import annotations

import warnings

from peft_core.integrations.trainer import *  # noqa: F403
from peft_core.integrations.trainer import __all__  # noqa: F401

warnings.warn(
    "peft_core.trainer moved to peft_core.integrations.trainer; the old path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
