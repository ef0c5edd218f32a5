"""``PromptEncoder``: p-tuning's virtual tokens, computed from learned embeddings by an MLP or LSTM.

``h(E)`` with ``E`` (tokens x token_dim) learned and ``h`` either
``Linear(d, k) -> ReLU -> Linear(k, k) -> ReLU -> Linear(k, d)`` (MLP) or a bidirectional
LSTM of hidden size ``k`` followed by ``Linear(2k, 2k) -> ReLU -> Linear(2k, d)`` (LSTM),
``k = encoder_hidden_size``. The submodules are named as in Hugging Face PEFT
(``embedding``, ``mlp_head``, ``lstm_head``). Without a head (built for inference, or to
continue training a checkpoint, which holds ``h(E)``) the tokens are ``E`` itself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peft_p_tuning.config import PromptEncoderConfig
from peft_prompt_tuning import VirtualTokens


class PromptEncoder(VirtualTokens):
    """Virtual tokens ``h(E)`` (``with_head``) or ``E``."""

    def __init__(self, config: PromptEncoderConfig, count: int, device: torch.device | None, with_head: bool) -> None:
        assert config.token_dim is not None and config.encoder_hidden_size is not None
        super().__init__(count, config.token_dim, device)
        self.mlp_head: nn.Sequential | None = None
        self.lstm_head: nn.LSTM | None = None
        if not with_head:
            return
        width, hidden = config.token_dim, config.encoder_hidden_size
        if config.encoder_reparameterization_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=width,
                hidden_size=hidden,
                num_layers=config.encoder_num_layers,
                dropout=config.encoder_dropout,
                bidirectional=True,
                batch_first=True,
                device=device,
            )
            self.mlp_head = nn.Sequential(
                nn.Linear(2 * hidden, 2 * hidden, device=device), nn.ReLU(), nn.Linear(2 * hidden, width, device=device)
            )
        else:
            self.mlp_head = nn.Sequential(
                nn.Linear(width, hidden, device=device),
                nn.ReLU(),
                nn.Linear(hidden, hidden, device=device),
                nn.ReLU(),
                nn.Linear(hidden, width, device=device),
            )

    @property
    def has_head(self) -> bool:
        return self.mlp_head is not None

    def tokens(self) -> Tensor:
        """(tokens, token_dim): ``h(E)``, computed once per call (every batch row gets the same)."""
        if self.mlp_head is None:
            return self.embedding.weight
        hidden = self.embedding.weight.unsqueeze(0)  # the encoder runs on one sequence of all tokens
        if self.lstm_head is not None:
            hidden = self.lstm_head(hidden)[0]
        encoded: Tensor = self.mlp_head(hidden)
        return encoded[0]
