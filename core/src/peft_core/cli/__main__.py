"""``python -m peft_core.cli``: the ``peft-core`` command."""

from __future__ import annotations

import sys

from peft_core.cli import main

sys.exit(main())
