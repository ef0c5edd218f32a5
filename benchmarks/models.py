"""The benchmark models: small random transformers models built from configs (no downloads).

Every builder seeds torch first, so two calls give identical weights. ``quick`` shrinks
every model to a smoke-test size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def llama(quick: bool, seed: int = 0) -> nn.Module:
    """llama-tiny: hidden 512, intermediate 1376, 4 layers, 8 heads, vocab 4096 (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    size = (
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128)
        if quick
        else dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=4096)
    )
    config = LlamaConfig(**size, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config)


def gpt2(quick: bool, seed: int = 0) -> nn.Module:
    """GPT-2 with Conv1D layers: 4 layers, 768 wide, 12 heads, vocab 8192 (fp32)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    size = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=128) if quick else dict(n_layer=4, n_embd=768, n_head=12)
    config = GPT2Config(**size, n_positions=256, bos_token_id=0, eos_token_id=0)
    if not quick:
        config.vocab_size = 8192
    return GPT2LMHeadModel(config)


class ConvNet(nn.Module):
    """A small image classifier: four 3x3 Conv2d (two with stride 2), a 1x1 Conv2d, a linear head."""

    def __init__(self, width: int, classes: int = 10) -> None:
        super().__init__()
        w = width
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, w, 3, padding=1),
                nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1),
                nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
                nn.Conv2d(4 * w, 4 * w, 1),
            ]
        )
        self.head = nn.Linear(4 * w, classes)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean((-1, -2)))


def convnet(quick: bool, seed: int = 0) -> nn.Module:
    """ConvNet of width 32 (channels 32-128) for 32x32 images; width 4 when quick."""
    torch.manual_seed(seed)
    return ConvNet(4 if quick else 32)


def linear_stack(quick: bool, seed: int = 0) -> nn.Module:
    """Eight Linear(1024) layers: the model of the incumbent's published mixed-batch numbers."""
    torch.manual_seed(seed)
    width = 32 if quick else 1024
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(8)])


def llama_large(quick: bool, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A ~0.94B-parameter Llama (hidden 2048, intermediate 5504, 16 layers, vocab 32000) in bf16.

    Built on the meta device (no init work), materialised with ``to_empty`` and filled
    with a cheap constant-plus-ramp pattern: merge and injection time do not depend on
    the values, and random init of 0.9B weights would dominate the run.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    size = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256)
        if quick
        else dict(
            hidden_size=2048, intermediate_size=5504, num_hidden_layers=16, num_attention_heads=16, vocab_size=32000
        )
    )
    config = LlamaConfig(**size, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(0.01)
        for buffer_name, buffer in model.named_buffers():
            if "inv_freq" in buffer_name:  # rotary frequencies are computed, not learned
                buffer.copy_(1.0 / (10000 ** (torch.arange(0, buffer.numel() * 2, 2).float() / (buffer.numel() * 2))))
    return model


def token_batch(batch: int, length: int, vocab: int, device: torch.device, seed: int = 0) -> Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
