"""Models and inputs for the conformance classes: mix one in before ``TunerConformance``."""

from __future__ import annotations

import torch
from torch import nn

from support.models import MLP, ConvNet, tiny_bert, tiny_gpt2, tiny_llama, tiny_mixtral, token_ids


class OnMLP:
    """Embedding, two linears and a head (``emb``, ``lin0``, ``lin1``, ``head``)."""

    def make_model(self) -> nn.Module:
        return MLP()

    def make_inputs(self) -> torch.Tensor:
        return torch.arange(12).reshape(3, 4) % 20


class OnConvNet:
    """A Conv1d and a Conv2d path (``conv1d``, ``conv2d``, ``head``)."""

    def make_model(self) -> nn.Module:
        return ConvNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 4, 8, 8)


class OnTransformer:
    """A tiny random transformers model; logits of 2 layers add fp32 rounding, hence merge_atol."""

    merge_atol = 1e-4
    build = staticmethod(tiny_gpt2)

    def make_model(self) -> nn.Module:
        return self.build()

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": token_ids(batch=3)}


class OnGpt2(OnTransformer):
    build = staticmethod(tiny_gpt2)


class OnBert(OnTransformer):
    build = staticmethod(tiny_bert)


class OnLlama(OnTransformer):
    build = staticmethod(tiny_llama)


class OnMixtral(OnTransformer):
    """Mixture of experts with bare 3-D expert parameters (``mlp.experts.gate_up_proj``)."""

    build = staticmethod(tiny_mixtral)
