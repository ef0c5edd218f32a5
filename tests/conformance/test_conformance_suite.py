"""The conformance suite itself: each check fails on a tuner with the fault it is there to catch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from torch import Tensor, nn

from peft_core import MergeError, PeftError, get_peft_model, register_tuner, registry
from peft_core.contract import Merge, PeftConfig
from peft_core.testing import TunerConformance, first_tensor
from peft_ia3 import IA3Config, IA3Layer, IA3Tuner
from support.models import MLP


class FaultyConfig(IA3Config):
    peft_type: Literal["FAULTY"] = "FAULTY"  # type: ignore[assignment]


def _tuner(layer_class: type[IA3Layer]) -> type[IA3Tuner]:
    class FaultyTuner(IA3Tuner):
        name = "faulty"
        config_class = FaultyConfig

        def create_layer(self, target: nn.Module, adapter_name: str, config: Any) -> IA3Layer:
            return layer_class(target)

    return FaultyTuner


# Each faulty layer declares IA3's capabilities, so that the suite runs (and must fail) the checks.
class ForgetsTheBiasOnMerge(IA3Layer):
    capabilities = IA3Layer.capabilities

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        merge = super().merged_weights(adapter_names)
        merge.weights.pop("bias", None)  # output scaling must scale the bias too
        return merge


class UsesEveryAdapter(IA3Layer):
    capabilities = IA3Layer.capabilities

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        active = self.active_adapters
        self.active_adapters = list(self.ia3_l.keys())  # ignores which adapter is active
        try:
            return super().forward(x, *args, **kwargs)
        finally:
            self.active_adapters = active


class SavesNothing(IA3Layer):
    capabilities = IA3Layer.capabilities

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        return {}


class HasNoEffect(IA3Layer):
    capabilities = IA3Layer.capabilities

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]


class SwapsNothing(IA3Layer):
    capabilities = IA3Layer.capabilities

    def hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        return None  # claims hotswapping, keeps the old adapter


class IgnoresRows(IA3Layer):
    capabilities = IA3Layer.capabilities

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        routing, self.row_routing = self.row_routing, None  # claims per-row batches, runs the active adapter
        try:
            return super().forward(x, *args, **kwargs)
        finally:
            self.row_routing = routing


class DeclaresNothing(IA3Layer):
    """Restates no capabilities: it supports none (nothing is inherited), and the suite checks the refusals."""


class Suite(TunerConformance):  # not collected: no "Test" prefix
    config = FaultyConfig(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"])

    def make_model(self) -> nn.Module:
        return MLP()

    def make_inputs(self) -> Tensor:
        return torch.arange(12).reshape(3, 4) % 20


@pytest.fixture
def faulty(request: pytest.FixtureRequest) -> Iterator[None]:
    register_tuner(_tuner(request.param))
    try:
        yield
    finally:
        registry.unregister_tuner("faulty")


CASES = [
    (ForgetsTheBiasOnMerge, "test_merge_unmerge_round_trip", "merged vs unmerged"),
    (ForgetsTheBiasOnMerge, "test_merge_and_unload_gives_a_plain_model", "merge_and_unload vs unmerged"),
    (UsesEveryAdapter, "test_adapters_are_isolated", "after adding another"),
    (SavesNothing, "test_save_load_round_trip", "loaded vs saved"),
    (SavesNothing, "test_state_dict_keys", "state dict is empty"),
    (HasNoEffect, "test_adapter_changes_outputs_and_disable_restores_them", "no effect"),
    (HasNoEffect, "test_trainable_parameters_are_exactly_the_adapters", "does not use"),
    (SwapsNothing, "test_hotswap_replaces_the_adapter_or_is_refused", "hotswapped adapter vs the saved one"),
    (IgnoresRows, "test_per_row_adapters_match_each_adapter_alone", "per-row adapters vs each adapter alone"),
]
TAKES_TMP_PATH = ("test_save_load_round_trip", "test_hotswap_replaces_the_adapter_or_is_refused")


@pytest.mark.parametrize(
    ("faulty", "check", "message"), CASES, indirect=["faulty"], ids=[f"{c[0].__name__}-{c[1]}" for c in CASES]
)
@pytest.mark.usefixtures("faulty")
def test_each_check_catches_its_fault(check: str, message: str, tmp_path: Path) -> None:
    method = getattr(Suite(), check)
    with pytest.raises(AssertionError, match=message):
        method(tmp_path) if check in TAKES_TMP_PATH else method()


@pytest.mark.parametrize("faulty", [IA3Layer, DeclaresNothing], indirect=True)
@pytest.mark.usefixtures("faulty")
def test_the_same_tuner_without_the_faults_passes(tmp_path: Path) -> None:
    suite = Suite()
    for name in dir(suite):
        if name.startswith("test_"):
            method = getattr(suite, name)
            method(tmp_path / name) if name in TAKES_TMP_PATH else method()


@pytest.mark.parametrize("faulty", [DeclaresNothing], indirect=True)
@pytest.mark.usefixtures("faulty")
def test_an_undeclared_capability_is_refused_not_inherited() -> None:
    model = get_peft_model(MLP(), Suite.config.model_copy())
    with pytest.raises(MergeError, match="DeclaresNothing does not declare merging"):
        model.merge_adapter()
    with pytest.raises(PeftError, match=r"not supported by DeclaresNothing \(capabilities.per_row\)"):
        model(torch.ones(2, 4), adapter_names=["default", "__base__"])


def test_first_tensor_finds_the_output_tensor() -> None:
    x = torch.ones(2)
    assert first_tensor(x) is x
    assert first_tensor((x, None)) is x and first_tensor({"out": x}) is x
    with pytest.raises(TypeError, match="override run"):
        first_tensor(3)


def test_peft_core_works_without_pytest_and_only_testing_needs_it() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # as if pytest were not installed
        "import peft_core, peft_lora\n"
        "try:\n    import peft_core.testing\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ImportError: peft_core.testing needs pytest: pip install 'peft-core[testing]'" in result.stdout
