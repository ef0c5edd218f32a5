"""OFT layers: the rotation formula, Cayley (exact and Neumann), caching, merging, COFT, dropout, errors."""

from __future__ import annotations

import copy
import warnings

import peft
import pytest
import torch
from peft.tuners.oft.layer import OFTLayer as TheirOFTLayer
from torch import nn

from peft_core import ConfigError, MergeError, PeftModel, get_peft_model
from peft_oft import Conv2d, Linear, OFTConfig, OFTLayer, PatchConv2d
from peft_oft.rotation import Rotation, split_features


def _model(module: nn.Module, **options: object) -> PeftModel:
    config = OFTConfig(**({"target_modules": ["0"], "oft_block_size": 4, "init_weights": False} | options))
    return get_peft_model(nn.Sequential(module), config)


def _layer(model: PeftModel) -> OFTLayer:
    layer = model.get_base_model()[0]
    assert isinstance(layer, OFTLayer)
    return layer


def _skew(vec: torch.Tensor, size: int) -> torch.Tensor:
    q = torch.zeros(vec.shape[0], size, size, dtype=vec.dtype)
    rows, cols = torch.triu_indices(size, size, 1)
    q[:, rows, cols] = vec
    return q - q.transpose(1, 2)


def test_linear_rotates_its_input_block_by_block() -> None:
    """y = W (x R) + b with R = blockdiag((I - Q_i)(I + Q_i)⁻¹) (exact Cayley)."""
    base = nn.Linear(8, 5)
    layer = _layer(_model(copy.deepcopy(base), use_cayley_neumann=False))
    assert isinstance(layer, Linear)
    q = _skew(layer.oft_R["default"].weight.detach(), 4)
    eye = torch.eye(4)
    blocks = [(eye - qi) @ torch.linalg.inv(eye + qi) for qi in q]
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), base(x @ torch.block_diag(*blocks)), atol=1e-6, rtol=1e-5)


def test_neumann_is_the_exact_transform_transposed_up_to_fourth_order() -> None:
    """Hugging Face PEFT's Neumann form I + 2Q + 2Q² + 2Q³ + Q⁴ is (I + Q)(I - Q)⁻¹ (= exactᵀ) but for
    the missing Q⁴ and higher terms: it departs from exactᵀ, and from orthogonality, by about ‖Q‖⁴
    (1e-5 at ‖Q‖ = 0.05, 0.9 at ‖Q‖ = 1); the exact transform is orthogonal to fp32 rounding."""
    rotation = Rotation(blocks=4, block_size=8)
    eye = torch.eye(8)
    for scale in (0.01, 0.05, 0.2):
        vec = scale * torch.randn(4, 28, generator=torch.Generator().manual_seed(0))
        q_norm = torch.linalg.matrix_norm(rotation.skew(vec), ord=2).max().item()
        exact = rotation.cayley(vec, neumann=False, terms=5)
        neumann = rotation.cayley(vec, neumann=True, terms=5)
        assert (exact.transpose(1, 2) @ exact - eye).abs().max() < 1e-6
        assert (neumann - exact.transpose(1, 2)).abs().max() <= 2 * q_norm**4 + 1e-6
        assert 0.5 * q_norm**4 <= (neumann.transpose(1, 2) @ neumann - eye).abs().max() <= 3 * q_norm**4 + 1e-6


def test_the_cayley_transform_runs_once_per_weight_version_without_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = Rotation.cayley

    def counted(self: Rotation, vec: torch.Tensor, neumann: bool, terms: int) -> torch.Tensor:
        calls.append(1)
        return original(self, vec, neumann, terms)

    monkeypatch.setattr(Rotation, "cayley", counted)
    model = _model(nn.Linear(8, 5))
    x = torch.randn(3, 8)
    with torch.no_grad():
        for _ in range(3):  # inference / generation steps
            model(x)
    assert len(calls) == 1
    with torch.no_grad():
        _layer(model).oft_R["default"].weight.add_(0.01)  # an optimizer step
        model(x)
    assert len(calls) == 2
    for _ in range(2):  # training: once per forward (a graph is never reused across backwards)
        model(x).sum().backward()
    assert len(calls) == 4


def test_without_gradients_the_rotation_is_folded_into_the_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than output features: W Rᵀ then one product; same outputs as rotating the input."""
    layer = _layer(_model(nn.Linear(8, 5)))
    x = torch.randn(4, 6, 8)
    with torch.no_grad():
        assert layer.folds(x)
        folded = layer(x)
        monkeypatch.setattr(Linear, "folds", lambda self, x: False)
        torch.testing.assert_close(folded, layer(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("neumann", [True, False])
def test_merging_two_adapters_keeps_the_outputs(neumann: bool) -> None:
    """Rotations applied R1 then R2 merge as W R2ᵀ R1ᵀ; unmerging multiplies by the transposes
    (exact Cayley: orthogonal) or the inverses (Neumann) and restores W to fp32 rounding."""
    model = _model(nn.Linear(8, 5), use_cayley_neumann=neumann)
    model.add_adapter("other", OFTConfig(target_modules=["0"], r=4, oft_block_size=0, init_weights=False))
    model.set_adapter(["default", "other"])
    x = torch.randn(3, 8)
    with torch.no_grad():
        unmerged = model(x)
        layer = _layer(model)
        weight = layer.base_layer.weight.detach().clone()
        merge = layer.merged_weights(["default", "other"])
        layer.base_layer.weight.copy_(merge.weights["weight"])
        torch.testing.assert_close(model.get_base_model()[0].base_layer(x), unmerged, atol=1e-5, rtol=0)
        restored = layer.unmerged_weights(["default", "other"], merge.state)["weight"]
        torch.testing.assert_close(restored, weight, atol=1e-6, rtol=0)


def test_embeddings_rotate_their_output_and_merge_two_adapters_in_order() -> None:
    """y = E[x] R1 R2; merged E' = E R1 R2; unmerged again bit for bit (the engine's exact unmerge)."""
    model = _model(nn.Embedding(10, 8), use_cayley_neumann=False)
    model.add_adapter("other", OFTConfig(target_modules=["0"], oft_block_size=2, init_weights=False))
    model.set_adapter(["default", "other"])
    layer = _layer(model)
    ids = torch.tensor([[1, 4, 9]])
    with torch.no_grad():
        rotations = [torch.block_diag(*layer.rotation(n)) for n in ("default", "other")]
        expected = layer.base_layer(ids) @ rotations[0] @ rotations[1]
        torch.testing.assert_close(model(ids), expected, atol=1e-6, rtol=1e-5)
        weight = layer.base_layer.weight.clone()
        model.merge_adapter()
        torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
        model.unmerge_adapter()
        assert torch.equal(layer.base_layer.weight, weight)


@pytest.mark.incumbent
def test_hugging_face_peft_merges_two_oft_adapters_in_the_wrong_order() -> None:
    """What the test above rules out: PEFT folds R1 in first, computing W R1ᵀ R2ᵀ for x R1 R2."""
    torch.manual_seed(0)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(8, 5)), peft.OFTConfig(target_modules=["0"], oft_block_size=4))
    model.add_adapter("other", peft.OFTConfig(target_modules=["0"], oft_block_size=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "oft_R" in name:
                p.normal_(0, 0.3)
    model.base_model.set_adapter(["default", "other"])
    x = torch.randn(3, 8)
    with torch.no_grad():
        unmerged = model(x)
        model.merge_adapter(["default", "other"])
        assert not torch.allclose(model(x), unmerged, atol=1e-3)


def test_a_conv2d_with_a_kernel_computes_hugging_face_peft_s_outputs_and_refuses_to_merge() -> None:
    model = _model(nn.Conv2d(4, 6, 3, padding=1), oft_block_size=4)
    layer = _layer(model)
    assert isinstance(layer, PatchConv2d) and not type(layer).capabilities.mergeable
    with pytest.raises(MergeError, match="merg"):
        model.merge_adapter()
    assert isinstance(_layer(_model(nn.Conv2d(4, 6, 1))), Conv2d)
    assert isinstance(_layer(_model(nn.Conv2d(4, 8, 1, groups=2))), PatchConv2d)  # W Rᵀ would mix groups


@pytest.mark.incumbent
def test_hugging_face_peft_oft_on_a_3x3_conv_is_not_a_rotation_of_its_kernel() -> None:
    """Why PatchConv2d refuses merging: there a fresh adapter (R = I) already changes the outputs,
    and merging (W Rᵀ) changes them again."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)).eval()
    x = torch.randn(2, 4, 8, 8)
    fresh = peft.get_peft_model(copy.deepcopy(base), peft.OFTConfig(target_modules=["0"], oft_block_size=4))
    with torch.no_grad():
        assert (fresh(x) - base(x)).abs().max() > 0.1
        unmerged = fresh(x)
        fresh.merge_adapter()
        assert (fresh(x) - unmerged).abs().max() > 0.1


def test_coft_projects_the_trained_parameter_and_inference_writes_nothing() -> None:
    model = _model(nn.Linear(8, 5), coft=True, eps=0.01)
    rotation = _layer(model).oft_R["default"]
    radius = 0.01 / 2**0.5  # eps / sqrt(blocks)
    with torch.no_grad():
        before = rotation.weight.clone()
        model(torch.randn(3, 8))
    assert torch.equal(rotation.weight, before), "an inference forward changed the parameter"
    model(torch.randn(3, 8)).sum().backward()  # training: projected in place, as Hugging Face PEFT
    norms = torch.linalg.matrix_norm(rotation.skew(rotation.weight.detach()))
    assert (norms <= radius * (1 + 1e-5)).all() and not torch.equal(rotation.weight, before)


def test_module_dropout_replaces_blocks_by_identity_in_training() -> None:
    layer = _layer(_model(nn.Linear(16, 5), module_dropout=0.5))
    eye = torch.eye(4)
    layer.train()
    dropped = layer._call_rotation("default")
    assert sum(torch.equal(block, eye) for block in dropped) == 2  # int(0.5 * 4) of 4 blocks
    layer.eval()
    assert not any(torch.equal(block, eye) for block in layer._call_rotation("default"))


@pytest.mark.incumbent
def test_hugging_face_peft_ignores_oft_module_dropout() -> None:
    """What the test above rules out: PEFT builds a dropout layer for OFT and never calls it."""
    torch.manual_seed(0)
    config = peft.OFTConfig(target_modules=["0"], oft_block_size=4, module_dropout=0.9, init_weights=False)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(16, 5)), config)
    x = torch.randn(3, 16)
    model.train()
    training = model(x)
    model.eval()
    torch.testing.assert_close(training, model(x))


def test_block_sizes_are_fitted_as_hugging_face_peft_fits_them() -> None:
    theirs = TheirOFTLayer.__new__(TheirOFTLayer)
    for features in range(1, 70):
        for given in range(1, 80):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                blocks, size = split_features(features, 0, given)
                r, _ = split_features(features, given, 0)
            fitted = (
                given if features % given == 0 and given <= features else theirs.adjust_oft_parameters(features, given)
            )
            assert (size, r) == (fitted, fitted) and blocks * size == features
    with pytest.warns(UserWarning, match=r"Adjusted `oft_block_size` to \(4\)"):
        split_features(32, 0, 5)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Conv2d(4, 6, (3, 1)), r"kernel_size=\(3, 1\)"),
        (nn.Conv2d(4, 6, 3, dilation=2), r"dilation=\(2, 2\)"),
    ],
)
def test_conv2d_shapes_hugging_face_peft_cannot_run_are_one_clear_error(module: nn.Module, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _model(module)


def test_bias_oft_only_trains_and_saves_the_adapted_layers_biases() -> None:
    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    ours = get_peft_model(copy.deepcopy(base), OFTConfig(target_modules=["0"], oft_block_size=4, bias="oft_only"))
    config = peft.OFTConfig(target_modules=["0"], oft_block_size=4, bias="oft_only")
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert "base_model.model.0.base_layer.bias" in trainable
