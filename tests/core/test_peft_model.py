"""PeftModel: adapters on a plain torch model, their states, merging and unloading."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peft_core import ConfigError, MergeError, ModulesToSaveWrapper, PeftError, PeftModel, get_peft_model
from peft_core.contract import AdapterLayer
from peft_lora import LoraConfig
from support.models import MLP
from support.training import train

X = torch.arange(12).reshape(3, 4) % 20


def _lora(**kwargs: object) -> LoraConfig:
    defaults: dict[str, object] = {"r": 4, "target_modules": ["lin0", "lin1", "emb"]}
    return LoraConfig(**(defaults | kwargs))


@torch.no_grad()
def _out(model: nn.Module) -> torch.Tensor:
    return model(X)


def _base_and_peft(**kwargs: object) -> tuple[nn.Module, PeftModel]:
    base = MLP().requires_grad_(False)
    return base, get_peft_model(copy.deepcopy(base), _lora(**kwargs))


def test_zero_initialised_adapter_gives_base_outputs() -> None:
    base = MLP()
    reference = _out(base)
    model = get_peft_model(base, _lora())
    assert torch.equal(_out(model), reference)


def test_only_adapters_and_modules_to_save_are_trainable() -> None:
    model = get_peft_model(MLP(), _lora(modules_to_save=["head"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "base_model.model.emb.lora_embedding_A.default",
        "base_model.model.emb.lora_embedding_B.default",
        "base_model.model.lin0.lora_A.default.weight",
        "base_model.model.lin0.lora_B.default.weight",
        "base_model.model.lin1.lora_A.default.weight",
        "base_model.model.lin1.lora_B.default.weight",
        "base_model.model.head.modules_to_save.default.weight",
        "base_model.model.head.modules_to_save.default.bias",
    }
    trainable_count, total = model.get_nb_trainable_parameters()
    lora = 4 * (20 + 16) + 2 * 4 * (16 + 16)
    head = 16 * 3 + 3
    assert trainable_count == lora + head
    assert total == sum(p.numel() for p in MLP().parameters()) + lora + head


def test_print_trainable_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    model = get_peft_model(MLP(), _lora())
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert capsys.readouterr().out == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}\n"
    )


def test_disable_adapter_gives_base_outputs_and_changes_nothing_else() -> None:
    base, model = _base_and_peft(init_lora_weights=False, modules_to_save=["head"], inference_mode=True)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    adapted = _out(model)
    assert not torch.allclose(adapted, _out(base))
    with model.disable_adapter():
        assert torch.equal(_out(model), _out(base))
    assert torch.equal(_out(model), adapted)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


def test_disable_adapter_restores_state_when_the_block_raises() -> None:
    _, model = _base_and_peft(init_lora_weights=False)
    adapted = _out(model)
    with pytest.raises(RuntimeError, match="boom"), model.disable_adapter():
        raise RuntimeError("boom")
    assert torch.equal(_out(model), adapted)


def test_second_adapter_leaves_the_first_untouched() -> None:
    _, model = _base_and_peft(init_lora_weights=False)
    first = _out(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.add_adapter("other", _lora(r=2, init_lora_weights=False, inference_mode=True))
    assert model.active_adapters == ["default"]
    assert torch.equal(_out(model), first)
    assert all(model.get_parameter(n).requires_grad == g for n, g in grads.items())
    model.set_adapter("other")
    assert model.active_adapters == ["other"]
    assert not torch.allclose(_out(model), first)
    assert model.base_model.model.lin0.lora_A["default"].weight.requires_grad  # set_adapter changes no flags
    assert not model.base_model.model.lin0.lora_A["other"].weight.requires_grad


def test_several_active_adapters_add_up() -> None:
    base, model = _base_and_peft(init_lora_weights=False, target_modules=["lin0"])
    model.add_adapter("b", _lora(init_lora_weights=False, target_modules=["lin0"]))
    layer = model.base_model.model.lin0
    x = torch.randn(5, 16)
    with torch.no_grad():
        model.set_adapter(["default", "b"])
        both = layer(x)
        expected = base.lin0(x) + sum(layer.lora_B[n](layer.lora_A[n](x)) * layer.scaling[n] for n in ("default", "b"))
    assert torch.allclose(both, expected, atol=1e-6)


def test_delete_adapter_unwraps_layers_left_empty() -> None:
    base, model = _base_and_peft(init_lora_weights=False, target_modules=["lin0"])
    model.add_adapter("b", _lora(target_modules=["lin0", "lin1"]))
    model.delete_adapter("b")
    assert isinstance(model.base_model.model.lin0, AdapterLayer)
    assert type(model.base_model.model.lin1) is nn.Linear
    model.delete_adapter("default")
    assert type(model.base_model.model.lin0) is nn.Linear
    assert torch.equal(_out(model), _out(base))
    with pytest.raises(PeftError, match="unknown adapter 'x'"):
        model.delete_adapter("x")


def test_delete_the_active_adapter_activates_another() -> None:
    _, model = _base_and_peft()
    model.add_adapter("b", _lora())
    model.delete_adapter("default")
    assert model.active_adapters == ["b"]


def test_merge_unmerge_round_trip_and_merged_outputs() -> None:
    _, model = _base_and_peft(init_lora_weights=False)
    weights = {n: p.clone() for n, p in model.get_base_model().state_dict().items()}
    unmerged = _out(model)
    model.merge_adapter()
    assert torch.allclose(_out(model), unmerged, atol=1e-5)
    model.unmerge_adapter()
    for name, value in model.get_base_model().state_dict().items():
        assert torch.allclose(value, weights[name], atol=1e-6), name
    assert torch.allclose(_out(model), unmerged, atol=1e-6)


def test_safe_merge_refuses_nan_and_leaves_weights_untouched() -> None:
    _, model = _base_and_peft(init_lora_weights=False)
    with torch.no_grad():
        model.base_model.model.lin1.lora_B["default"].weight[0, 0] = float("nan")
    before = {n: p.clone() for n, p in model.get_base_model().state_dict().items()}
    with pytest.raises(MergeError, match="lin1.*non-finite.*nothing was merged"):
        model.merge_adapter(safe_merge=True)
    after = model.get_base_model().state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_B" not in n)
    assert not any(layer.merged for layer in model.modules() if isinstance(layer, AdapterLayer))


def test_merge_and_unload_gives_a_plain_model_with_the_same_outputs() -> None:
    _, model = _base_and_peft(init_lora_weights=False, modules_to_save=["head"])
    with torch.no_grad():
        model.base_model.model.head.modules_to_save["default"].bias.add_(1.0)
    unmerged = _out(model)
    plain = model.merge_and_unload()
    assert type(plain) is MLP
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert torch.allclose(_out(plain), unmerged, atol=1e-5)


def test_unload_restores_the_original_model() -> None:
    base, model = _base_and_peft(init_lora_weights=False, modules_to_save=["head"])
    model.merge_adapter()
    plain = model.unload()
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    for name, value in plain.state_dict().items():
        assert torch.allclose(value, base.state_dict()[name], atol=1e-6), name


def test_disabling_merged_adapters_is_refused() -> None:
    _, model = _base_and_peft()
    model.merge_adapter()
    with pytest.raises(MergeError, match="unmerge_adapter"), model.disable_adapter():
        pass


def test_attributes_fall_through_to_the_wrapped_model() -> None:
    model = get_peft_model(MLP(), _lora())
    assert model.head is model.get_base_model().head
    with pytest.raises(AttributeError):
        _ = model.not_an_attribute


def test_training_lowers_the_loss_and_moves_only_adapters() -> None:
    model = get_peft_model(MLP(), _lora(modules_to_save=["head"]))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    target = torch.tensor([0, 1, 2])
    losses = train(model, lambda: nn.functional.cross_entropy(model(X).mean(1), target), steps=30, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("name", ["", "a.b", "../x", "a/b", "__base__", "forward", "train"])
def test_invalid_adapter_names_are_refused(name: str) -> None:
    model = get_peft_model(MLP(), _lora())
    with pytest.raises(ConfigError, match="invalid adapter name"):
        model.add_adapter(name, _lora())


def test_adapters_of_two_methods_do_not_mix() -> None:
    from peft_ia3 import IA3Config

    model = get_peft_model(MLP(), _lora())
    with pytest.raises(PeftError, match="holds LORA adapters; one model takes adapters of one method"):
        model.add_adapter("ia3", IA3Config(target_modules=["lin0"]))


def test_modules_to_save_of_two_active_adapters_is_refused() -> None:
    model = get_peft_model(MLP(), _lora(modules_to_save=["head"]))
    model.add_adapter("b", _lora(modules_to_save=["head"]))
    with pytest.raises(PeftError, match="only one of them can be active"):
        model.set_adapter(["default", "b"])
    assert isinstance(model.base_model.model.head, ModulesToSaveWrapper)


def test_failed_injection_leaves_the_model_unchanged() -> None:
    model = get_peft_model(MLP(), _lora(target_modules=["lin0"]))
    with pytest.raises(ConfigError):
        model.add_adapter("b", _lora(target_modules=["lin1", "head"], modules_to_save=["head"]))
    assert type(model.base_model.model.lin1) is nn.Linear
    assert list(model.peft_config) == ["default"]
