"""Models and inputs for the conformance classes: mix one in before ``TunerConformance``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from peft_core.testing import TunerConformance
from support.models import (
    MLP,
    AttentionNet,
    ConvNet,
    EncoderNet,
    GroupedConvNet,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_mixtral,
    token_ids,
)


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


class OnGroupedConvNet:
    """Grouped Conv1d/2d/3d and a depthwise Conv2d (``conv1d``, ``conv2d``, ``depthwise``, ``conv3d``, ``head``)."""

    def make_model(self) -> nn.Module:
        return GroupedConvNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 4, 8, 8)


class OnAttention:
    """``nn.MultiheadAttention`` (``mha``, sequence first) and a head (``lin0``)."""

    def make_model(self) -> nn.Module:
        return AttentionNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(5, 3, 10).transpose(0, 1)  # batch first for the suite: (3, 5, 10)

    def run(self, model: Callable[..., Any], inputs: Any) -> torch.Tensor:
        with torch.no_grad():
            result: torch.Tensor = model(inputs.transpose(0, 1)).transpose(0, 1)
        return result


class OnEncoder:
    """Two ``nn.TransformerEncoderLayer``s (``encoder.layers.N.self_attn``), batch first."""

    def make_model(self) -> nn.Module:
        return EncoderNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 5, 8)


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


class OnPromptModel:
    """A transformers model of one task for prompt learning; the inputs carry an attention mask
    (prompt learning extends it). Outputs per position keep only the input's positions, so that a
    model that prepends virtual tokens compares with the base model."""

    neutral_init = False  # virtual tokens change the outputs from the start
    merge_atol = 1e-4
    build: Callable[[], nn.Module] = staticmethod(tiny_gpt2)
    decoder_length: int | None = None  # encoder-decoder models: decoder_input_ids of this length

    def make_model(self) -> nn.Module:
        return self.build()

    def make_inputs(self) -> dict[str, torch.Tensor]:
        ids = token_ids(batch=3, length=6)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.decoder_length:
            inputs["decoder_input_ids"] = token_ids(batch=3, length=self.decoder_length, seed=1)
        return inputs

    def run(self, model: Callable[..., Any], inputs: Any) -> torch.Tensor:
        output = TunerConformance.run(self, model, inputs)  # type: ignore[arg-type]
        length = inputs["input_ids"].shape[1]
        return output[:, -length:] if output.dim() >= 2 and output.shape[1] > length else output
