"""Every save path writes the adapter's one stored config and checkpoint keys, loadable by both libraries.

The bug this guards against: a save from a model that is not a ``PeftModel`` (after
``inject_adapter_in_model``, or through ``peft_core.integrations.distributed.save_pretrained``
on a DDP- or FSDP2-wrapped model) read the first layer's per-module config (``r=4`` for
``r=8, rank_pattern={"lin0": 4}``), IA3's ``feedforward_modules`` narrowed to ``[]``, and
keys without ``base_model.model.``, so that ``PeftModel.from_pretrained`` could not load the
folder it wrote. DDP and FSDP2 run here in a one-process gloo group.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import peft
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from peft_core import PeftConfig, PeftModel, get_peft_model, inject_adapter_in_model
from peft_core.integrations import distributed
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.models import MLP

X = torch.arange(12).reshape(3, 4) % 20
CONFIGS: dict[str, Callable[[], PeftConfig]] = {
    "lora-patterns": lambda: LoraConfig(
        r=8, lora_alpha=16, target_modules=["lin0", "lin1"], rank_pattern={"lin0": 4}, alpha_pattern={"lin1": 3}
    ),
    "ia3-feedforward": lambda: IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"]),
}


@pytest.fixture(scope="module")
def process_group() -> Iterator[None]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _perturbed(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


def _save(path: str, config: PeftConfig, folder: Path) -> nn.Module:
    """Adapt a fresh MLP (same seed each time), save it along ``path``; returns the adapted model."""
    torch.manual_seed(0)
    base = MLP()
    if path == "peft_model":
        model: nn.Module = get_peft_model(base, config)
        _perturbed(model)
        model.save_pretrained(folder)
        return model
    model = inject_adapter_in_model(config, base)
    _perturbed(model)
    if path == "injected":
        distributed.save_pretrained(model, folder)
    elif path == "ddp":
        distributed.save_pretrained(torch.nn.parallel.DistributedDataParallel(model), folder)
    else:  # fsdp2
        distributed.shard_model(model)
        distributed.save_pretrained(model, folder)
    return model


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("path", ["peft_model", "injected", "ddp", "fsdp2"])
def test_every_save_path_writes_the_stored_config_and_loads_in_both_libraries(
    path: str, config_name: str, tmp_path: Path
) -> None:
    config = CONFIGS[config_name]()
    model = _save(path, config, tmp_path)
    with torch.no_grad():
        expected = model(X)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    wanted = config.to_json_dict()
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "feedforward_modules", "target_modules"):
        assert saved.get(key) == wanted.get(key), f"{key}: saved {saved.get(key)!r}, configured {wanted.get(key)!r}"
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.") for k in keys), sorted(keys)

    torch.manual_seed(0)
    ours = PeftModel.from_pretrained(MLP(), tmp_path)
    torch.manual_seed(0)
    theirs = peft.PeftModel.from_pretrained(MLP(), str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(ours(X), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(theirs(X), expected, atol=1e-5, rtol=0)


def test_the_stored_config_is_the_one_saved_and_shown(tmp_path: Path) -> None:
    config = CONFIGS["lora-patterns"]()
    model = inject_adapter_in_model(config, MLP())
    assert model.peft_config["default"].r == 8  # type: ignore[union-attr]
    assert model.peft_config["default"].rank_pattern == {"lin0": 4}  # type: ignore[union-attr]
    assert copy.deepcopy(model).peft_config == model.peft_config
