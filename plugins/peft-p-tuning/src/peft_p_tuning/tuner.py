"""``PTuningTuner``: p-tuning (Liu et al., 2021), virtual tokens from a prompt encoder."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from peft_core.contract import Capabilities, PeftConfig, weights_will_be_loaded
from peft_p_tuning.config import PromptEncoderConfig
from peft_p_tuning.encoder import PromptEncoder
from peft_prompt_tuning import PromptLearningConfig, VirtualTokenTuner, input_embeddings


class PTuningTuner(VirtualTokenTuner):
    """Prompt tuning's inputs with p-tuning's tokens: ``inputs_embeds = [h(E); E[input_ids]]``."""

    name = "p_tuning"
    config_class = PromptEncoderConfig
    capabilities = Capabilities()

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        prepared = super().prepare_config(model, config, targets)
        assert isinstance(prepared, PromptEncoderConfig)
        if prepared.encoder_hidden_size is None:  # as Hugging Face PEFT: the model's width
            prepared = prepared.model_copy(update={"encoder_hidden_size": prepared.token_dim})
        return prepared

    def create_model_adapter(self, model: nn.Module, adapter_name: str, config: PeftConfig) -> nn.Module:
        assert isinstance(config, PromptEncoderConfig)
        assert config.num_virtual_tokens and config.num_transformer_submodules
        weight = getattr(input_embeddings(model), "weight", None)
        device = weight.device if isinstance(weight, Tensor) else None
        loading = weights_will_be_loaded()
        if config.encoder_reparameterization_type == "MLP" and config.encoder_num_layers != 2 and not loading:
            warnings.warn(
                f"encoder_num_layers={config.encoder_num_layers} is ignored by the MLP prompt encoder, which has "
                "3 layers (as in Hugging Face PEFT); it sets the number of LSTM layers",
                UserWarning,
                stacklevel=2,
            )
        if loading and not config.inference_mode:
            warnings.warn(
                f"adapter {adapter_name!r}: a P_TUNING checkpoint holds the prompt encoder's output, not the encoder; "
                "training continues on those virtual tokens directly, without an encoder",
                UserWarning,
                stacklevel=2,
            )
        return self.build_module(config, device, with_head=not config.inference_mode and not loading)

    def build_module(self, config: PromptLearningConfig, device: torch.device | None, with_head: bool) -> PromptEncoder:
        assert isinstance(config, PromptEncoderConfig)
        assert config.num_virtual_tokens and config.num_transformer_submodules
        count = config.num_virtual_tokens * config.num_transformer_submodules
        return PromptEncoder(config, count, device, with_head=with_head)
