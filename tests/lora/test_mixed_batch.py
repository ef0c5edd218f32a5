"""Per-row adapters in one batch (BGMV): every row equals that row run alone with its adapter."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from peft_core import BASE_ADAPTER, PeftError, PeftModel, get_peft_model
from peft_ia3 import IA3Config
from peft_lora import LoraConfig, rows
from support.models import MLP, tiny_gpt2, tiny_llama, token_ids

ROW_NAMES = ["b", BASE_ADAPTER, "a", "c", "a", "b"]


@pytest.fixture(params=["grouped", "per-row"])
def schedule(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both exact schedules of ``rows_delta``, forced (the cost model picks one per call)."""
    grouped = request.param == "grouped"
    monkeypatch.setattr(rows, "prefer_grouped", lambda *_: grouped)
    return str(request.param)


def _lora_model(build: Callable[[], nn.Module], targets: list[str] | str) -> PeftModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's fan_in_fan_out notice
        config = LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False)
        model = get_peft_model(build(), config, adapter_name="a")
        model.add_adapter("b", LoraConfig(r=5, lora_alpha=3, target_modules=targets, init_lora_weights=False))
        model.add_adapter("c", LoraConfig(r=3, use_rslora=True, target_modules=targets, init_lora_weights=False))
    model.base_model.model.eval()
    return model.eval()


def _row_alone(model: PeftModel, name: str, row: torch.Tensor) -> torch.Tensor:
    if name == BASE_ADAPTER:
        with model.disable_adapter():
            return _out(model(row))
    model.set_adapter(name)
    return _out(model(row))


def _out(output: object) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output  # type: ignore[return-value]


def _check_rows(model: PeftModel, batch: torch.Tensor, names: list[str], atol: float = 1e-5) -> None:
    with torch.no_grad():
        mixed = _out(model(batch, adapter_names=names))
        for i, name in enumerate(names):
            alone = _row_alone(model, name, batch[i : i + 1])
            assert torch.allclose(mixed[i : i + 1], alone, atol=atol), (i, name, (mixed[i] - alone[0]).abs().max())


MODELS = {
    "mlp-embedding-linear": (MLP, ["emb", "lin0", "lin1", "head"]),
    "gpt2-conv1d": (tiny_gpt2, ["c_attn", "c_proj", "c_fc", "wte"]),
    "llama": (tiny_llama, "all-linear"),
}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("length", [1, 7])  # decode-like and prefill-like rows
def test_each_row_matches_that_row_alone(model_name: str, length: int, schedule: str) -> None:
    build, targets = MODELS[model_name]
    model = _lora_model(build, targets)
    vocab = 20 if model_name.startswith("mlp") else 64
    _check_rows(model, token_ids(batch=len(ROW_NAMES), length=length, vocab=vocab), ROW_NAMES)


def test_rows_of_adapters_missing_from_some_layers(schedule: str) -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["lin0"], init_lora_weights=False))
    model.add_adapter("b", LoraConfig(r=4, target_modules=["lin1", "emb"], init_lora_weights=False))
    model.eval()
    names = ["default", "b", BASE_ADAPTER, "b"]
    batch = token_ids(batch=4, length=3, vocab=20)
    with torch.no_grad():
        mixed = model(batch, adapter_names=names)
        for i, name in enumerate(names):
            if name == BASE_ADAPTER:
                with model.disable_adapter():
                    alone = model(batch[i : i + 1])
            else:
                model.set_adapter(name)
                alone = model(batch[i : i + 1])
            assert torch.allclose(mixed[i : i + 1], alone, atol=1e-5)


def test_all_base_rows_give_base_outputs() -> None:
    model = _lora_model(MLP, ["emb", "lin0"])
    batch = token_ids(batch=3, length=4, vocab=20)
    with torch.no_grad(), model.disable_adapter():
        base = model(batch)
    with torch.no_grad():
        assert torch.equal(model(batch, adapter_names=[BASE_ADAPTER] * 3), base)


@pytest.mark.parametrize("model_name", ["mlp-embedding-linear", "gpt2-conv1d"])
def test_rows_all_on_one_adapter_equal_the_plain_forward(model_name: str) -> None:
    build, targets = MODELS[model_name]
    model = _lora_model(build, targets)
    batch = token_ids(batch=4, length=3, vocab=20 if model_name.startswith("mlp") else 64)
    model.set_adapter("c")
    with torch.no_grad():
        assert torch.allclose(_out(model(batch, adapter_names=["c"] * 4)), _out(model(batch)), atol=1e-5)


def test_updated_weights_are_seen_by_the_next_mixed_call(schedule: str) -> None:
    model = _lora_model(MLP, ["lin0", "lin1"])
    batch = token_ids(batch=6, length=2, vocab=20)
    with torch.no_grad():
        model(batch, adapter_names=ROW_NAMES)  # fills the stacked-weights cache
        model.base_model.model.lin0.lora_B["a"].weight.mul_(3.0)  # in place: version moves
        model.base_model.model.lin1.lora_A["c"].weight.data = torch.randn(3, 16)  # re-pointed
    _check_rows(model, batch, ROW_NAMES)


def test_gradients_through_mixed_rows_equal_per_row_gradients(schedule: str) -> None:
    torch.manual_seed(0)
    model = _lora_model(MLP, ["emb", "lin0", "lin1"])
    batch = token_ids(batch=6, length=3, vocab=20)
    model(batch, adapter_names=ROW_NAMES).square().sum().backward()
    mixed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for i, name in enumerate(ROW_NAMES):
        if name != BASE_ADAPTER:
            model.set_adapter(name)
            model(batch[i : i + 1]).square().sum().backward()
    alone = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert mixed.keys() == alone.keys() and len(mixed) == 3 * 3 * 2  # 3 adapters x 3 layers x (A, B)
    for key, grad in mixed.items():
        assert torch.allclose(grad, alone[key], atol=1e-4), key


def test_adapters_no_row_uses_get_no_gradient() -> None:
    model = _lora_model(MLP, ["lin0", "lin1"])
    model(token_ids(batch=2, length=3, vocab=20), adapter_names=["a", BASE_ADAPTER]).sum().backward()
    graded = {n.split(".")[-2] for n, p in model.named_parameters() if p.grad is not None}
    assert graded == {"a"}


def test_half_precision_base_with_fp32_adapters(schedule: str) -> None:
    model = _lora_model(lambda: MLP().to(torch.bfloat16), ["lin0", "lin1"])
    assert model.base_model.model.lin0.lora_A["a"].weight.dtype == torch.float32
    _check_rows(model, token_ids(batch=6, length=2, vocab=20), ROW_NAMES, atol=2e-2)


def test_ia3_rows_gather_their_scaling_vectors() -> None:
    model = get_peft_model(tiny_gpt2(), IA3Config(target_modules=["c_attn", "mlp.c_proj"], init_ia3_weights=False))
    model.add_adapter(
        "b", IA3Config(target_modules=["c_attn", "c_fc"], feedforward_modules=["c_fc"], init_ia3_weights=False)
    )
    model.eval()
    names = ["b", BASE_ADAPTER, "default", "b"]
    batch = token_ids(batch=4, length=5)
    with torch.no_grad():
        mixed = model(batch, adapter_names=names).logits
        for i, name in enumerate(names):
            alone = _row_alone(model, name, batch[i : i + 1])
            assert torch.allclose(mixed[i : i + 1], alone, atol=1e-5), name


def test_wrong_number_of_names_is_one_clear_error_and_leaves_no_state() -> None:
    model = _lora_model(MLP, ["lin0"])
    batch = token_ids(batch=3, length=2, vocab=20)
    with pytest.raises(PeftError, match="adapter_names has 2 entries but the batch has 3 rows"):
        model(batch, adapter_names=["a", "b"])
    assert all(layer.row_routing is None for layer in model.modules() if hasattr(layer, "row_routing"))
    model.set_adapter("a")
    with torch.no_grad():
        reference = copy.deepcopy(model)(batch)
        assert torch.equal(model(batch), reference)


def test_dropout_adapters_refuse_per_row_training() -> None:
    model = get_peft_model(MLP(), LoraConfig(r=2, lora_dropout=0.1, target_modules=["lin0"]))
    model.train()
    with pytest.raises(PeftError, match="only run in eval mode"):
        model(token_ids(batch=2, length=2, vocab=20), adapter_names=["default", BASE_ADAPTER])


def test_grouped_and_per_row_are_chosen_by_the_cost_of_moving_values() -> None:
    decode = dict(rows=64, tokens=1, rank=16, width_in=512, a_in=512, out=1376, groups=32)
    prefill = dict(rows=32, tokens=64, rank=16, width_in=512, a_in=512, out=1376, groups=32)
    assert rows.prefer_grouped(**decode)
    assert not rows.prefer_grouped(**prefill)
