"""LoHa and LoKr layers: the formulas, the factored and folded forms, dropouts, initialisation."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from peft_core import PeftError, get_peft_model
from peft_loha import LoHaConfig, LoHaLayer
from peft_lokr import LoKrConfig, LoKrLayer
from peft_lycoris import LycorisConfig, LycorisLayer


def _layer(module: nn.Module, config: LycorisConfig) -> LycorisLayer:
    model = get_peft_model(nn.Sequential(module), config.model_copy(update={"target_modules": ["0"]}))
    layer = model.get_base_model()[0]
    assert isinstance(layer, LycorisLayer)
    return layer


def _input(module: nn.Module, rows: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if isinstance(module, nn.Linear):
        return torch.randn(rows, 5, module.in_features, generator=generator)
    spatial = (9,) if isinstance(module, nn.Conv1d) else (9, 9)
    return torch.randn(rows, module.in_channels, *spatial, generator=generator)


def _reference(layer: LycorisLayer, x: torch.Tensor) -> torch.Tensor:
    """``base(x)`` plus the base operation with ``delta W``: Hugging Face PEFT's way."""
    return layer.base_layer(x) + layer.with_weight(x, layer.delta_weight("default"), bias=False)


def test_loha_linear_is_the_hadamard_formula() -> None:
    layer = _layer(nn.Linear(6, 4), LoHaConfig(r=3, alpha=6, init_weights=False))
    assert isinstance(layer, LoHaLayer)
    w = {n: getattr(layer, f"hada_{n}")["default"] for n in ("w1_a", "w1_b", "w2_a", "w2_b")}
    delta = (w["w1_a"] @ w["w1_b"]) * (w["w2_a"] @ w["w2_b"]) * 2.0
    torch.testing.assert_close(layer.delta_weight("default"), delta)
    x = torch.randn(2, 6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.base_layer.weight + delta, layer.base_layer.bias))


def test_lokr_linear_is_the_kronecker_formula() -> None:
    layer = _layer(nn.Linear(6, 4), LoKrConfig(r=1, alpha=3, init_weights=False))
    assert isinstance(layer, LoKrLayer)  # out 4 = 2 x 2, in 6 = 2 x 3; r=1 < 3 / 2: w2 is w2_a @ w2_b
    w2 = layer.lokr_w2_a["default"] @ layer.lokr_w2_b["default"]
    delta = torch.kron(layer.lokr_w1["default"], w2) * 3.0
    torch.testing.assert_close(layer.delta_weight("default"), delta)
    x = torch.randn(2, 6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.base_layer.weight + delta, layer.base_layer.bias))


CASES = {
    "loha-linear": (nn.Linear(12, 10), LoHaConfig(r=3)),
    "loha-conv1d": (nn.Conv1d(4, 6, 3, padding=1), LoHaConfig(r=2)),
    "loha-conv2d-stride": (nn.Conv2d(4, 6, 3, stride=2, padding=1), LoHaConfig(r=2)),
    "loha-conv2d-effective": (nn.Conv2d(4, 6, 3, padding=1), LoHaConfig(r=2, use_effective_conv2d=True)),
    "loha-conv1d-effective": (nn.Conv1d(4, 6, 3), LoHaConfig(r=2, use_effective_conv2d=True)),
    "loha-grouped": (nn.Conv2d(8, 6, 3, groups=2), LoHaConfig(r=2)),
    "lokr-linear-full-w2": (nn.Linear(12, 10), LoKrConfig(r=4)),
    "lokr-linear-decompose-both": (nn.Linear(64, 48), LoKrConfig(r=1, decompose_both=True)),
    "lokr-linear-factor": (nn.Linear(64, 48), LoKrConfig(r=2, decompose_factor=4)),
    "lokr-conv1d-3d-w2": (nn.Conv1d(4, 6, 3, padding=1), LoKrConfig(r=4)),
    "lokr-conv1d-effective": (nn.Conv1d(8, 12, 3), LoKrConfig(r=1, use_effective_conv2d=True)),
    "lokr-conv2d-4d-w2": (nn.Conv2d(4, 6, 3, padding=1), LoKrConfig(r=4)),
    "lokr-conv2d-low-rank": (nn.Conv2d(8, 12, 3, stride=2), LoKrConfig(r=1)),
    "lokr-conv2d-effective": (nn.Conv2d(8, 12, 3), LoKrConfig(r=1, use_effective_conv2d=True)),
    "lokr-grouped": (nn.Conv2d(8, 12, 3, groups=2), LoKrConfig(r=1)),
}


@pytest.fixture
def forced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the folded (``W + delta W``) or the apart (factored where possible) form."""
    monkeypatch.setattr(LycorisLayer, "_fold", lambda self, x, drawn: request.param == "folded")
    return str(request.param)


@pytest.mark.parametrize("forced", ["folded", "apart"], indirect=True)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_form_computes_the_formula_and_its_gradients(name: str, forced: str) -> None:
    module, config = CASES[name]
    layer = _layer(copy.deepcopy(module), config.model_copy(update={"init_weights": False}))
    x = _input(module)
    output = layer(x)
    expected = _reference(layer, x)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    params = layer.adapter_parameters("default")
    got = torch.autograd.grad(output.square().sum(), params)
    want = torch.autograd.grad(expected.square().sum(), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_lokr_factored_form_skips_the_kronecker_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regular shapes never build kron(w1, w2); a grouped conv and a 3-D lokr_w2 have no factored form."""
    layer = _layer(nn.Linear(64, 48), LoKrConfig(r=2, init_weights=False))
    # a, b = 6, 8 and c, d = 8, 8: min(c b (d + a), a d (c + b)) per token, against a b c d = 3072
    assert layer.factored_cost("default") == min(8 * 8 * (8 + 6), 6 * 8 * (8 + 8)) == 768
    monkeypatch.setattr(torch, "kron", None)  # would fail if called
    with torch.no_grad():
        assert layer.factored("default", torch.randn(3, 64)) is not None
    assert _layer(nn.Conv1d(4, 6, 3), LoKrConfig(r=4)).factored_cost("default") is None  # 3-D lokr_w2
    assert _layer(nn.Conv2d(8, 12, 3, groups=2), LoKrConfig(r=1)).factored_cost("default") is None


def _chooses_fold(layer: LycorisLayer, rows: int, grad: bool) -> bool:
    x = torch.randn(rows, layer.fan_in if not layer.is_conv else layer.base_layer.in_channels)
    if layer.is_conv:
        x = torch.randn(rows, layer.base_layer.in_channels, 16, 16)
    with torch.set_grad_enabled(grad):
        return layer._fold(x, [("default", None)])


def test_the_cheaper_form_is_chosen_per_shape() -> None:
    """Linear 512 x 512: LoHa r=8 (rank r² = 64) factored when training (3 thin products < a weight
    gradient) and for a few tokens, folded for 1024 tokens without grad (no second product at all);
    LoHa r=32 (rank 1024 > 512) always folded; LoKr factored when training; convolutions folded."""
    loha = _layer(nn.Linear(512, 512), LoHaConfig(r=8))
    assert not _chooses_fold(loha, 1024, grad=True)
    assert _chooses_fold(loha, 1024, grad=False)
    assert not _chooses_fold(loha, 8, grad=False)
    assert _chooses_fold(_layer(nn.Linear(512, 512), LoHaConfig(r=32)), 1024, grad=True)
    assert not _chooses_fold(_layer(nn.Linear(512, 512), LoKrConfig(r=8)), 1024, grad=True)
    assert _chooses_fold(_layer(nn.Conv2d(64, 64, 3), LoKrConfig(r=8)), 16, grad=True)


def test_rank_dropout_rescales_as_hugging_face_peft() -> None:
    """LoHa always divides the kept rows by their share; LoKr only with ``rank_dropout_scale``."""
    for config, scaled in [
        (LoHaConfig(rank_dropout=0.5), True),
        (LoKrConfig(rank_dropout=0.5), False),
        (LoKrConfig(rank_dropout=0.5, rank_dropout_scale=True), True),
    ]:
        layer = _layer(nn.Linear(8, 64), config)
        torch.manual_seed(0)
        mask = layer.rank_mask("default")
        torch.manual_seed(0)
        kept = (torch.rand(64) > 0.5).float()
        torch.testing.assert_close(mask, kept / kept.mean() if scaled else kept)


def test_module_dropout_skips_the_whole_adapter_in_training_only() -> None:
    layer = _layer(nn.Linear(8, 6), LoHaConfig(module_dropout=1.0, init_weights=False))
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer.train()(x), layer.base_layer(x))
    assert not torch.allclose(layer.eval()(x), layer.base_layer(x))


def test_per_row_batches_with_dropouts_only_in_eval_mode() -> None:
    model = get_peft_model(nn.Sequential(nn.Linear(8, 6)), LoHaConfig(target_modules=["0"], rank_dropout=0.1))
    model.train()
    with pytest.raises(PeftError, match="eval mode"):
        model(torch.randn(2, 8), adapter_names=["default", "__base__"])


def test_initialisation_starts_at_the_base_model() -> None:
    """init_weights=True: a zero factor (LoHa hada_w2_b, LoKr lokr_w1); LoKr "lycoris": lokr_w2 (or w2_b)."""
    loha = _layer(nn.Linear(8, 6), LoHaConfig())
    assert not loha.hada_w2_b["default"].any() and loha.hada_w1_a["default"].any()
    lokr = _layer(nn.Linear(8, 6), LoKrConfig(r=1))
    assert not lokr.lokr_w1["default"].any() and lokr.lokr_w2_a["default"].any()
    lycoris = _layer(nn.Linear(8, 6), LoKrConfig(r=1, init_weights="lycoris"))
    assert lycoris.lokr_w1["default"].any() and not lycoris.lokr_w2_b["default"].any()
    for layer in (loha, lokr, lycoris):
        assert not layer.delta_weight("default").any()
    assert _layer(nn.Linear(8, 6), LoHaConfig(init_weights=False)).delta_weight("default").any()


def test_effective_conv_shapes_are_hugging_face_peft_s() -> None:
    """CP kernels: (r, r, k, 1) for a Conv1d, (r, r, kh, kw) for a Conv2d; none for 1x1 kernels."""
    for module in (nn.Conv1d(4, 6, 3), nn.Conv2d(4, 6, 3), nn.Conv2d(4, 6, 1)):
        for config_class, key in ((LoHaConfig, "hada_t1"), (LoKrConfig, "lokr_t2")):
            config = config_class(r=1, target_modules=["0"], use_effective_conv2d=True)
            ours = {
                k: tuple(v.shape)
                for k, v in _layer(copy.deepcopy(module), config).adapter_state_dict("default").items()
            }
            theirs_config = getattr(peft, config_class.__name__)(r=1, target_modules=["0"], use_effective_conv2d=True)
            theirs_model = peft.get_peft_model(nn.Sequential(copy.deepcopy(module)), theirs_config)
            theirs = {
                k.removeprefix("base_model.model.0."): tuple(v.shape)
                for k, v in peft.get_peft_model_state_dict(theirs_model).items()
            }
            assert ours == theirs
            assert (key in ours) == (module.kernel_size != (1, 1) and module.kernel_size != (1,))


@pytest.mark.incumbent
def test_hugging_face_peft_cannot_run_lokr_effective_conv_on_a_conv1d() -> None:
    """What ours does (cases "lokr-conv1d-effective" above): PEFT's kron fails on the CP kernel's layout."""
    config = peft.LoKrConfig(r=1, target_modules=["0"], use_effective_conv2d=True)
    model = peft.get_peft_model(nn.Sequential(nn.Conv1d(8, 12, 3)), config)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        model(torch.randn(2, 8, 9))
