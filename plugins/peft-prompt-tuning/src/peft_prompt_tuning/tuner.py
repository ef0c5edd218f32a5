"""``PromptTuningTuner``: learned virtual tokens in front of the input embeddings (Lester et al., 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peft_core.contract import Capabilities, PeftConfig, weights_will_be_loaded
from peft_prompt_tuning.config import PromptTuningConfig
from peft_prompt_tuning.init import initial_rows
from peft_prompt_tuning.learning import input_embeddings
from peft_prompt_tuning.prepend import VirtualTokenTuner
from peft_prompt_tuning.tokens import VirtualTokens


def _device(module: nn.Module) -> torch.device | None:
    weight = getattr(module, "weight", None)
    return weight.device if isinstance(weight, Tensor) else None


class PromptTuningTuner(VirtualTokenTuner):
    """``inputs_embeds = [P; E[input_ids]]`` with ``P`` (num_virtual_tokens x token_dim) learned.

    For SEQ_2_SEQ_LM the embedding has ``2 * num_virtual_tokens`` rows, as in Hugging Face
    PEFT (``num_transformer_submodules = 2``); the encoder receives the first half.
    """

    name = "prompt_tuning"
    config_class = PromptTuningConfig
    capabilities = Capabilities()

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module:
        assert isinstance(config, PromptTuningConfig)
        assert config.num_virtual_tokens and config.num_transformer_submodules and config.token_dim
        words = input_embeddings(model)
        count = config.num_virtual_tokens * config.num_transformer_submodules
        adapter = VirtualTokens(count, config.token_dim, _device(words))
        if not config.inference_mode and not weights_will_be_loaded():
            rows = initial_rows(config, words, count)
            if rows is not None:
                with torch.no_grad():
                    adapter.embedding.weight.copy_(rows)
        return adapter
