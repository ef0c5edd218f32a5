"""LoHa, LoKr and OFT meet the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

import torch
from torch import nn

from conformance_models import OnConvNet, OnLlama, OnMLP
from peft_core.testing import TunerConformance
from peft_loha import LoHaConfig
from peft_lokr import LoKrConfig
from peft_oft import OFTConfig
from support.models import ConvMix


class OnConvMix:
    """A 1x1 Conv2d, a grouped Conv2d, Conv1d with kernels 3 and 1 (``point``, ``grouped``, ``seq``, ``seq_point``)."""

    def make_model(self) -> nn.Module:
        return ConvMix()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 4, 8, 8)


class TestLoHaOnLinear(OnMLP, TunerConformance):
    config = LoHaConfig(r=2, alpha=4, target_modules=["lin0", "lin1"], modules_to_save=["head"])
    second_config = LoHaConfig(r=3, target_modules=["lin1"])
    expected_keys = frozenset(
        {f"base_model.model.{m}.hada_{w}" for m in ("lin0", "lin1") for w in ("w1_a", "w1_b", "w2_a", "w2_b")}
        | {"base_model.model.head.weight", "base_model.model.head.bias"}
    )


class TestLoHaOnConvolutions(OnConvNet, TunerConformance):
    config = LoHaConfig(r=2, target_modules=["conv1d", "conv2d"])


class TestLoHaEffectiveConv(OnConvMix, TunerConformance):
    config = LoHaConfig(r=2, target_modules=["point", "grouped", "seq", "seq_point"], use_effective_conv2d=True)


class TestLoHaOnLlama(OnLlama, TunerConformance):
    config = LoHaConfig(r=4, target_modules="all-linear", rank_pattern={"down_proj": 2})


class TestLoKrOnLinear(OnMLP, TunerConformance):
    config = LoKrConfig(r=1, target_modules=["lin0", "lin1"], decompose_both=True)
    second_config = LoKrConfig(r=8, target_modules=["lin1"])


class TestLoKrOnConvolutions(OnConvNet, TunerConformance):
    config = LoKrConfig(r=4, target_modules=["conv1d", "conv2d"])  # full w2: a 3-D one on the Conv1d
    second_config = LoKrConfig(r=1, target_modules=["conv1d", "conv2d"], use_effective_conv2d=True)


class TestLoKrEffectiveConv(OnConvMix, TunerConformance):
    config = LoKrConfig(r=1, target_modules=["point", "grouped", "seq", "seq_point"], use_effective_conv2d=True)


class TestLoKrOnLlama(OnLlama, TunerConformance):
    config = LoKrConfig(r=2, target_modules="all-linear", decompose_factor=4)


class TestOFTOnLinearAndEmbedding(OnMLP, TunerConformance):
    config = OFTConfig(oft_block_size=4, target_modules=["emb", "lin0", "lin1"], modules_to_save=["head"])
    second_config = OFTConfig(r=2, oft_block_size=0, target_modules=["emb", "lin1"], block_share=True)
    expected_keys = frozenset(
        {"base_model.model.lin0.oft_R.weight", "base_model.model.lin1.oft_R.weight"}
        | {"base_model.model.emb.oft_embedding_R.weight"}
        | {"base_model.model.head.weight", "base_model.model.head.bias"}
    )


class TestOFTExactCayleyCoft(OnMLP, TunerConformance):
    config = OFTConfig(oft_block_size=4, target_modules=["lin0", "lin1"], use_cayley_neumann=False, coft=True, eps=0.5)


class TestOFTOnPointwiseConv(OnConvMix, TunerConformance):
    config = OFTConfig(oft_block_size=2, target_modules=["point", "head"])


class TestOFTOnPatchConv(OnConvNet, TunerConformance):
    """A 3x3 Conv2d: Hugging Face PEFT's patch-wise forward, which changes outputs at init and does not merge."""

    config = OFTConfig(oft_block_size=4, target_modules=["conv2d"])
    neutral_init = False


class TestOFTOnLlama(OnLlama, TunerConformance):
    config = OFTConfig(oft_block_size=8, target_modules="all-linear")
