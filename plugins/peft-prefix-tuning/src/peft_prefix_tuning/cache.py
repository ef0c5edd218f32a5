"""The prefix as transformers' KV cache: what each attention layer finds before the input's keys.

A decoder-only or encoder model gets a ``DynamicCache`` whose layer ``l`` holds the prefix's
keys and values ``(batch, heads, tokens, head_dim)``; an encoder-decoder model an
``EncoderDecoderCache`` whose decoder self-attention holds them and whose cross-attention
cache is empty (so the decoder attends to the encoder outputs of this input), as Hugging
Face PEFT builds them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from peft_prefix_tuning.config import PrefixTuningConfig


def layer_pairs(prefix: Tensor, config: PrefixTuningConfig, rows: int) -> list[tuple[Tensor, Tensor]]:
    """(key, value) of every layer, each (rows, heads, tokens, head_dim), from the prefix rows
    (tokens, num_layers * 2 * heads * head_dim). The batch is a broadcast view (no copy).

    Layer ``l`` takes pair ``l`` of the rows; with ``num_transformer_submodules == 2``
    (encoder-decoder) pair ``2l mod num_layers``: Hugging Face PEFT lays the rows out for a
    self- and a cross-attention pair per layer and then drops the cross-attention half, so
    its checkpoints mean that.
    """
    assert config.num_layers and config.num_attention_heads and config.token_dim
    layers, heads = config.num_layers, config.num_attention_heads
    tokens = prefix.shape[0]
    per_layer = prefix.view(tokens, 2 * layers, heads, config.token_dim // heads).permute(1, 2, 0, 3)
    batched = per_layer.unsqueeze(1).expand(-1, rows, -1, -1, -1)  # (2 * layers, rows, heads, tokens, head_dim)
    step = 2 if config.num_transformer_submodules == 2 else 1
    sources = [(step * layer) % layers for layer in range(layers)]
    return [(batched[2 * source], batched[2 * source + 1]) for source in sources]


def prefix_cache(prefix: Tensor, config: PrefixTuningConfig, rows: int, encoder_decoder: bool) -> Any:
    """A new cache holding the prefix for ``rows`` batch rows (``DynamicCache`` or ``EncoderDecoderCache``)."""
    from transformers import DynamicCache, EncoderDecoderCache  # the plugin's dependency; heavy to import

    cache = DynamicCache(layer_pairs(prefix, config, rows))
    return EncoderDecoderCache(cache, DynamicCache()) if encoder_decoder else cache
