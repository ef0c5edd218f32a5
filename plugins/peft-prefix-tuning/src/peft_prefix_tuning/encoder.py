"""``PrefixEncoder``: the prefix of every layer, ``num_virtual_tokens x (num_layers * 2 * token_dim)``.

Row ``i`` holds token ``i``'s key and value of every layer, ``[k_0 v_0 k_1 v_1 ...]`` with
each ``k``/``v`` of ``token_dim = heads * head_dim``. With ``prefix_projection`` it is
``transform(E)``, ``transform = Linear(d, k) -> tanh -> Linear(k, num_layers * 2 * d)`` and
``E`` (tokens x d) learned; else ``E`` itself, of the full width. As in Hugging Face PEFT
(whose names these are: ``embedding``, ``transform``), a checkpoint holds the prefix, so an
adapter built for inference (or loaded to train on) has no projection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peft_prefix_tuning.config import PrefixTuningConfig
from peft_prompt_tuning import VirtualTokens


class PrefixEncoder(VirtualTokens):
    """The prefix (tokens x num_layers * 2 * token_dim): ``transform(E)`` or ``E``."""

    def __init__(self, config: PrefixTuningConfig, device: torch.device | None, with_projection: bool) -> None:
        assert config.num_virtual_tokens and config.token_dim and config.num_layers and config.encoder_hidden_size
        width = config.num_layers * 2 * config.token_dim
        super().__init__(config.num_virtual_tokens, config.token_dim if with_projection else width, device)
        self.transform: nn.Sequential | None = None
        if with_projection:
            self.transform = nn.Sequential(
                nn.Linear(config.token_dim, config.encoder_hidden_size, device=device),
                nn.Tanh(),
                nn.Linear(config.encoder_hidden_size, width, device=device),
            )
        if config.init_weights == "zero":
            with torch.no_grad():
                last = self.transform[-1] if self.transform is not None else self.embedding
                for param in last.parameters():
                    param.zero_()

    @property
    def has_head(self) -> bool:
        return self.transform is not None

    def tokens(self) -> Tensor:
        """(tokens, num_layers * 2 * token_dim), computed once per call (every batch row gets the same)."""
        if self.transform is None:
            return self.embedding.weight
        prefix: Tensor = self.transform(self.embedding.weight)
        return prefix
