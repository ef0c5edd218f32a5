"""The torchrun launch that the DDP and FSDP tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
from launching import HERE, launch, torchrun_command


@pytest.fixture(scope="session")
def worker_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One torchrun launch of worker.py (every DDP and FSDP case); its output folder."""
    out = tmp_path_factory.mktemp("distributed")
    launch(torchrun_command(HERE / "worker.py", str(out)))
    return out
