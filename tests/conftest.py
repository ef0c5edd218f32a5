from __future__ import annotations

import warnings

import pytest
import torch

torch.set_num_threads(1)  # tests are small; two cores are shared with parallel work


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _quiet_transformers() -> None:
    warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")
