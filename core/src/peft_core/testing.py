"""The conformance suite every tuner plugin's tests subclass, so that all tuners meet one bar.

A plugin's test module needs a few lines::

    from peft_core.testing import TunerConformance

    class TestMyTuner(TunerConformance):
        config = MyConfig(target_modules=["lin0", "lin1"])

        def make_model(self) -> nn.Module:
            return MyModel()

        def make_inputs(self) -> torch.Tensor:
            return torch.randn(4, 16)

pytest then runs every inherited ``test_*`` method against that tuner: base outputs at
neutral init, save/load round trip, multi-adapter isolation, the trainable-parameter set
and the checkpoint keys; and for each capability the layers (or, for a model-level
adapter, the tuner) declare, its check (merge/unmerge round trip and merge_and_unload,
per-row batches, hotswap, weighted combination), or, where it is not declared, that the
engine refuses it. Override ``run`` when the model's output is not a tensor, a
``.logits`` or a tuple, and ``perturb`` when adding small noise to the adapter tensors
does not move a fresh adapter away from its neutral init. This module needs pytest
(``pip install 'peft-core[testing]'``); nothing else in peft-core imports it.
"""

from __future__ import annotations

import copy
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peft_core.api.functions import get_peft_model, hotswap_adapter
from peft_core.api.peft_model import PeftModel
from peft_core.contract.capabilities import Capabilities, declared
from peft_core.contract.config import CONFIG_NAME, PeftConfig
from peft_core.contract.layer import AdapterLayer, adapter_layers
from peft_core.contract.rows import BASE_ADAPTER
from peft_core.contract.tuner import BaseTuner
from peft_core.engine import ModulesToSaveWrapper
from peft_core.errors import MergeError, PeftError
from peft_core.io.checkpoint import WEIGHTS_NAME
from peft_core.io.loading import get_peft_model_state_dict

try:
    import pytest
except ImportError as exc:  # pragma: no cover - only without the testing extra
    raise ImportError("peft_core.testing needs pytest: pip install 'peft-core[testing]'") from exc

__all__ = ["TunerConformance", "first_tensor"]

KEY_PREFIX = "base_model.model."


def first_tensor(output: Any) -> Tensor:
    """The tensor a model call is judged by: itself, ``.logits``, or the first item of a tuple/dict."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, Mapping):
        return first_tensor(next(iter(output.values())))
    if isinstance(output, Sequence) and output:
        return first_tensor(output[0])
    raise TypeError(f"cannot find a tensor in a {type(output).__name__}; override run() in the test class")


def _close(actual: Tensor, expected: Tensor, atol: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0, msg=lambda m: f"{what}:\n{m}")


def _tuned_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    """The tuner's own layers (not modules_to_save copies)."""
    return [(p, layer) for p, layer in adapter_layers(model) if not isinstance(layer, ModulesToSaveWrapper)]


class TunerConformance:
    """Behaviour every tuner must show; subclass it as ``Test<Something>`` and set the hooks below."""

    #: Config of the adapter under test; a fresh adapter must leave the outputs unchanged
    #: unless ``neutral_init`` is False.
    config: ClassVar[PeftConfig]
    #: Config of a second adapter for the multi-adapter checks (default: ``config``).
    second_config: ClassVar[PeftConfig | None] = None
    #: Whether a fresh adapter computes the base model's outputs.
    neutral_init: ClassVar[bool] = True
    #: Arguments of the ``add_weighted_adapter`` check (where ``weighted`` is declared): the
    #: combination of the one adapter "default" with weight 1 must compute what it computes
    #: (default: the tuner's own ``combination_type``).
    weighted_options: ClassVar[Mapping[str, Any]] = {}
    #: Exact checkpoint keys of the default adapter, when the format is pinned (optional).
    expected_keys: ClassVar[frozenset[str] | None] = None
    #: Tolerances: unmerged outputs against references, and merged against unmerged (fp32).
    atol: ClassVar[float] = 1e-6
    merge_atol: ClassVar[float] = 1e-5

    # --- what a subclass supplies ---

    def make_model(self) -> nn.Module:
        """A fresh base model (called once per test; deterministic weights are not required)."""
        raise NotImplementedError("set make_model in the TunerConformance subclass")

    def make_inputs(self) -> Any:
        """One batch: a tensor (called as ``model(x)``) or a dict of keyword arguments."""
        raise NotImplementedError("set make_inputs in the TunerConformance subclass")

    def run(self, model: Callable[..., Any], inputs: Any) -> Tensor:
        """The output tensor the checks compare, computed without gradients."""
        with torch.no_grad():
            return first_tensor(model(**inputs) if isinstance(inputs, Mapping) else model(inputs))

    def perturb(self, model: PeftModel, adapter_name: str) -> None:
        """Move every tensor of ``adapter_name`` away from its init (seeded by the adapter name)."""
        generator = torch.Generator().manual_seed(zlib.crc32(adapter_name.encode()))
        params = [p for _, layer in adapter_layers(model) for p in layer.adapter_parameters(adapter_name)]
        if adapter_name in model.base_model.adapter_modules:
            params.extend(model.base_model.adapter_modules[adapter_name].parameters())
        with torch.no_grad():
            for param in params:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_(0.1 * noise.to(device=param.device, dtype=param.dtype))

    # --- helpers ---

    def _base(self) -> nn.Module:
        return self.make_model().eval()

    def _peft(self, base: nn.Module, perturbed: bool = True) -> PeftModel:
        model = get_peft_model(copy.deepcopy(base), self.config.model_copy(deep=True))
        if perturbed:
            self.perturb(model, "default")
        return model

    def _second(self) -> PeftConfig:
        return (self.second_config or self.config).model_copy(deep=True)

    def _adapter_params(self, model: PeftModel) -> dict[int, nn.Parameter]:
        found: dict[int, nn.Parameter] = {}
        for _, layer in adapter_layers(model):
            for name in layer.adapter_configs:
                found.update((id(p), p) for p in layer.adapter_parameters(name))
        tuner = model.base_model.tuner
        for config in model.peft_config.values():
            found.update((id(p), p) for p in tuner.extra_trainable_parameters(model.get_base_model(), config).values())
        found.update((id(p), p) for p in model.base_model.adapter_modules.parameters())
        return found

    def capabilities(self, model: PeftModel) -> Capabilities:
        """What every adapter of ``model`` declares: its layers' classes and a model-level adapter's tuner."""
        declared_by = [declared(type(layer)) for _, layer in _tuned_layers(model)]
        if model.base_model.adapter_modules:
            declared_by.append(declared(type(model.base_model.tuner)))
        return Capabilities(**{name: all(name in d.names() for d in declared_by) for name in Capabilities().__dict__})

    # --- the checks ---

    def test_base_outputs_at_neutral_init(self) -> None:
        if not self.neutral_init:
            pytest.skip("this tuner does not start at the base model (neutral_init = False)")
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base, perturbed=False)
        assert _tuned_layers(model) or model.base_model.adapter_modules, "the adapter has no layer and no module"
        _close(self.run(model, inputs), self.run(base, inputs), self.atol, "fresh adapter vs base model")

    def test_adapter_changes_outputs_and_disable_restores_them(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        expected = self.run(base, inputs)
        adapted = self.run(model, inputs)
        assert not torch.allclose(adapted, expected, atol=100 * self.atol, rtol=0), (
            "a perturbed adapter leaves the outputs unchanged: the adapter has no effect, or perturb() "
            "does not move it away from its init (override perturb)"
        )
        with model.disable_adapter():
            _close(self.run(model, inputs), expected, self.atol, "disabled adapter vs base model")
        _close(self.run(model, inputs), adapted, self.atol, "re-enabled adapter")

    def test_merge_unmerge_round_trip(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        if not self.capabilities(model).mergeable:
            with pytest.raises(MergeError, match="merg"):
                model.merge_adapter()
            with pytest.raises(MergeError, match="merg"):
                model.merge_and_unload()
            return
        unmerged = self.run(model, inputs)
        before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
        model.merge_adapter()
        assert all(layer.merged for _, layer in _tuned_layers(model)), "merge_adapter left layers unmerged"
        changed = [k for k, v in model.get_base_model().state_dict().items() if not torch.equal(v, before[k])]
        assert changed, "merge_adapter changed no base weight"
        _close(self.run(model, inputs), unmerged, self.merge_atol, "merged vs unmerged")
        model.unmerge_adapter()
        assert not any(layer.merged for _, layer in _tuned_layers(model))
        for key, value in model.get_base_model().state_dict().items():
            _close(value, before[key], self.merge_atol, f"{key} after unmerge")
        _close(self.run(model, inputs), unmerged, self.merge_atol, "unmerged again")

    def test_merge_and_unload_gives_a_plain_model(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        if not self.capabilities(model).mergeable:
            pytest.skip("merging is not declared; test_merge_unmerge_round_trip checks that it is refused")
        unmerged = self.run(model, inputs)
        merged = model.merge_and_unload()
        assert not any(isinstance(m, AdapterLayer) for m in merged.modules())
        assert set(merged.state_dict()) == set(base.state_dict()), "merge_and_unload changed the parameter names"
        _close(self.run(merged, inputs), unmerged, self.merge_atol, "merge_and_unload vs unmerged")

    def test_unload_restores_the_base_model(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        plain = self._peft(base).unload()
        assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
        state, reference = plain.state_dict(), base.state_dict()
        assert set(state) == set(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference), "unload changed base weights"
        _close(self.run(plain, inputs), self.run(base, inputs), 0.0, "unloaded vs base model")

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        model.save_pretrained(tmp_path)
        assert {CONFIG_NAME, WEIGHTS_NAME} <= {p.name for p in tmp_path.iterdir()}
        saved = get_peft_model_state_dict(model)
        on_disk = load_file(tmp_path / WEIGHTS_NAME)
        assert set(on_disk) == set(saved)
        assert all(torch.equal(on_disk[k], saved[k].cpu()) for k in saved)
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
        original = model.peft_config["default"].model_dump(exclude={"inference_mode"})
        assert loaded.peft_config["default"].model_dump(exclude={"inference_mode"}) == original
        _close(self.run(loaded, inputs), self.run(model, inputs), 0.0, "loaded vs saved adapter")
        assert not any(p.requires_grad for p in loaded.parameters()), "an adapter loaded for inference trains"
        loaded.load_adapter(tmp_path, "again")
        again = get_peft_model_state_dict(loaded, "again")
        assert set(again) == set(saved) and all(torch.equal(again[k], saved[k]) for k in saved)

    def test_adapters_are_isolated(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        alone = self.run(model, inputs)
        first = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
        model.add_adapter("other", self._second())
        self.perturb(model, "other")
        assert model.active_adapters == ["default"]
        _close(self.run(model, inputs), alone, 0.0, "default adapter after adding another")
        model.set_adapter("other")
        assert not torch.allclose(self.run(model, inputs), alone, atol=100 * self.atol, rtol=0)
        # Train "other" for a step: "default" must not move.
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=0.1)
        self._backward(model, inputs)
        optimizer.step()
        after = get_peft_model_state_dict(model, "default")
        assert all(torch.equal(after[k], first[k]) for k in first), "training another adapter moved 'default'"
        model.delete_adapter("other")
        assert model.active_adapters == ["default"]
        _close(self.run(model, inputs), alone, 0.0, "default adapter after deleting the other")

    def test_per_row_adapters_match_each_adapter_alone(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        model.add_adapter("other", self._second())
        self.perturb(model, "other")
        batch = first_tensor(inputs).shape[0]
        names = [("default", "other", BASE_ADAPTER)[row % 3] for row in range(batch)]
        mixed = functools.partial(model, adapter_names=names)
        if not self.capabilities(model).per_row:
            with pytest.raises(PeftError, match="not supported"):  # says so, rather than ignoring the names
                self.run(mixed, inputs)
            return
        assert batch >= 3, "make_inputs() needs a batch of 3 or more rows for this check"
        alone = {}
        for name in ("default", "other"):
            model.set_adapter(name)
            alone[name] = self.run(model, inputs)
        with model.disable_adapter():
            alone[BASE_ADAPTER] = self.run(model, inputs)
        model.set_adapter("default")
        expected = torch.stack([alone[name][row] for row, name in enumerate(names)])
        _close(self.run(mixed, inputs), expected, self.merge_atol, "per-row adapters vs each adapter alone")

    def _backward(self, model: nn.Module, inputs: Any) -> None:
        """Gradients of a loss that depends on every output (mean square)."""
        output = first_tensor(model(**inputs) if isinstance(inputs, Mapping) else model(inputs))
        assert output.requires_grad, "the forward pass does not use any trainable adapter tensor"
        output.float().pow(2).mean().backward()  # type: ignore[no-untyped-call]

    def test_trainable_parameters_are_exactly_the_adapters(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        expected = self._adapter_params(model)
        trainable = {id(p): p for p in model.parameters() if p.requires_grad}
        names = {id(p): n for n, p in model.named_parameters()}
        assert expected, "the adapter has no parameters"
        extra = sorted(names[i] for i in set(trainable) - set(expected))
        missing = sorted(names[i] for i in set(expected) - set(trainable))
        assert not extra and not missing, f"trainable but not adapter: {extra}; adapter but frozen: {missing}"
        assert model.get_nb_trainable_parameters()[0] == sum(p.numel() for p in expected.values())
        self._backward(model, inputs)
        no_grad = sorted(names[i] for i, p in trainable.items() if p.grad is None)
        assert not no_grad, f"adapter tensors that the forward pass does not use: {no_grad}"

    def test_state_dict_keys(self) -> None:
        model = self._peft(self._base())
        model.add_adapter("adapter_x", self.config.model_copy(deep=True))
        keys = set(get_peft_model_state_dict(model))
        assert keys, "the adapter state dict is empty"
        own_keys = set(model.base_model.adapter_state_dict("default"))
        # A tuner whose saved form is computed (p-tuning saves its encoder's output) may keep the
        # tensors it computes from out of the checkpoint; every saved key is still one of its keys.
        computed = type(model.base_model.tuner).tensors_to_save is not BaseTuner.tensors_to_save
        assert keys == own_keys or (computed and keys < own_keys), "saved keys are not the tuner's keys"
        layer_keys = {
            k for path, _ in adapter_layers(model.get_base_model()) for k in keys if k.startswith(KEY_PREFIX + path)
        }
        assert all(k.startswith(KEY_PREFIX) for k in layer_keys)
        assert set(get_peft_model_state_dict(model, "adapter_x")) == keys, "keys depend on the adapter name"
        named = [k for k in keys if {"default", "adapter_x"} & set(k.split("."))]
        assert not named, f"keys carry the adapter name: {named}"
        live = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
        own = model.base_model.adapter_state_dict("adapter_x")
        copies = sorted(k for k, t in own.items() if t.data_ptr() not in live)
        assert not copies, f"adapter_state_dict tensors that are not the model's own: {copies}"
        if self.expected_keys is not None:
            assert keys == self.expected_keys, f"keys: {sorted(keys)}"

    def test_hotswap_replaces_the_adapter_or_is_refused(self, tmp_path: Path) -> None:
        base, inputs = self._base(), self.make_inputs()
        other = self._peft(base)
        self.perturb(other, "default")  # twice: another adapter than a fresh _peft
        other.save_pretrained(tmp_path)
        expected = self.run(other, inputs)
        model = self._peft(base)
        if not self.capabilities(model).hotswap:
            with pytest.raises(PeftError, match="hotswap"):
                hotswap_adapter(model, tmp_path)
            return
        before = self.run(model, inputs)
        assert not torch.allclose(before, expected, atol=100 * self.atol, rtol=0), "perturb gave the same adapter twice"
        hotswap_adapter(model, tmp_path)
        _close(self.run(model, inputs), expected, self.atol, "hotswapped adapter vs the saved one")
        if self.capabilities(model).mergeable:  # a merged adapter is never swapped under the merge
            model.merge_adapter()
            with pytest.raises(PeftError, match="merged"):
                hotswap_adapter(model, tmp_path)

    def test_weighted_combination_of_one_adapter_or_refusal(self) -> None:
        base, inputs = self._base(), self.make_inputs()
        model = self._peft(base)
        alone = self.run(model, inputs)
        if getattr(self.config, "modules_to_save", None):
            pytest.skip("whole-module copies (modules_to_save) are not combined")
        if not self.capabilities(model).weighted:
            with pytest.raises(PeftError, match="add_weighted_adapter"):
                model.add_weighted_adapter(["default"], [1.0], "combined", **self.weighted_options)
            return
        model.add_weighted_adapter(["default"], [1.0], "combined", **self.weighted_options)
        model.set_adapter("combined")
        _close(self.run(model, inputs), alone, self.merge_atol, "weighted combination of one adapter, weight 1")
