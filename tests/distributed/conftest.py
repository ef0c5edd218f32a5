"""The launches that the distributed tests share: each runs once per session, on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from launching import HERE, WORKER_ENGINES, accelerate_worker_command, launch, torchrun_command


@pytest.fixture(scope="session")
def worker_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One torchrun launch of worker.py (every DDP, FSDP2 and DeepSpeed case); its output folder."""
    out = tmp_path_factory.mktemp("distributed")
    launch(torchrun_command(HERE / "worker.py", str(out)))
    return out


@pytest.fixture(scope="session")
def engine_results(worker_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The output folder of an engine's runs: worker.py's for ``WORKER_ENGINES``; for
    ``ACCELERATE_ENGINES`` one ``accelerate launch`` of accelerate_worker.py each, on first use."""
    launched: dict[str, Path | BaseException] = {}

    def results(engine: str) -> Path:
        if engine in WORKER_ENGINES:
            return worker_results / engine
        if engine not in launched:
            out = tmp_path_factory.mktemp(engine)
            try:
                launch(accelerate_worker_command(engine.removeprefix("accelerate-"), out))
                launched[engine] = out
            except BaseException as exc:  # one failed launch fails its tests, without launching again
                launched[engine] = exc
        found = launched[engine]
        if isinstance(found, BaseException):
            raise found
        return found

    return results
