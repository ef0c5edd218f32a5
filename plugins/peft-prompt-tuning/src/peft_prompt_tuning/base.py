"""``PromptLearningTuner``: what every prompt-learning method shares (configs, checkpoint keys).

A prompt-learning method wraps no module (``targets_modules = False``): its adapter is one
``VirtualTokens`` module per adapter name (``create_model_adapter``), kept by the core.
Checkpoints are Hugging Face PEFT's: the virtual tokens as ``prompt_embeddings`` (the
computed vectors for methods with a head), and the ``modules_to_save`` copies (the
classification head of SEQ_CLS) as ``base_model.<path>.<name>``, because Hugging Face
PEFT's ``PeftModel`` holds a prompt-learning model directly as its ``base_model``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from peft_core.contract import AdaptedModel, BaseTuner, Capabilities, PeftConfig, adapter_layers
from peft_prompt_tuning.learning import PromptLearningConfig, check_task, model_dimensions
from peft_prompt_tuning.tokens import VirtualTokens

PROMPT_KEY = "prompt_embeddings"
MODULES_PREFIX = "base_model."
#: Keys of a head's tensors in ``adapter_state_dict`` (live tensors the saved form is computed from).
HEAD_PREFIX = "prompt_encoder."


class PromptLearningTuner(BaseTuner):
    """Base of prompt tuning, p-tuning and prefix tuning; subclasses add ``create_model_adapter``
    and the input hooks."""

    targets_modules = False
    capabilities = Capabilities()  # virtual tokens merge into no weight, and one adapter runs per batch

    def check_config(self, config: PeftConfig) -> None:
        check_task(config, self.name)

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        assert isinstance(config, PromptLearningConfig)
        return config.model_copy(update=model_dimensions(model, config))

    # --- the adapter in use ---

    def active(self, model: AdaptedModel) -> tuple[VirtualTokens, PromptLearningConfig]:
        """The active adapter's module and config (prompt learning runs one adapter at a time)."""
        name = model.active_adapters[0]
        module, config = model.adapter_module(name), model.peft_config[name]
        assert isinstance(module, VirtualTokens) and isinstance(config, PromptLearningConfig)
        return module, config

    # --- checkpoints ---

    def _saved_modules(self, model: AdaptedModel, adapter_name: str) -> dict[str, Tensor]:
        return {
            f"{MODULES_PREFIX}{path}.{key}": tensor
            for path, layer in adapter_layers(model.model)
            for key, tensor in layer.adapter_state_dict(adapter_name).items()
        }

    def adapter_state_dict(self, model: AdaptedModel, adapter_name: str) -> dict[str, Tensor]:
        """``prompt_embeddings`` (the embedding's rows: a checkpoint is loaded into them), the
        ``modules_to_save`` copies, and for a module with a head (p-tuning's encoder, prefix
        projection) the head's tensors as ``prompt_encoder.<name>``: the saved vectors are computed
        from them (``tensors_to_save``), they are never saved themselves. A checkpoint therefore
        loads into an adapter without a head only (as ``from_pretrained`` builds it); loading one
        into a head (resuming p-tuning training) fails on the missing head tensors instead of
        putting the encoder's output where its input belongs.
        """
        module = model.adapter_module(adapter_name)
        assert isinstance(module, VirtualTokens)
        tensors = {PROMPT_KEY: module.embedding.weight, **self._saved_modules(model, adapter_name)}
        if module.has_head:
            heads = module.state_dict(keep_vars=True).items()
            tensors.update({f"{HEAD_PREFIX}{key}": t for key, t in heads if not key.startswith("embedding.")})
        return tensors

    def build_module(self, config: PromptLearningConfig, device: torch.device, with_head: bool) -> VirtualTokens:
        """A new adapter module for ``config`` on ``device``, with its head if the method has one
        (p-tuning's encoder, prefix tuning's projection). Methods with a head override this."""
        raise NotImplementedError(f"{type(self).__name__} builds no adapter module with a head")

    def tensors_to_save(
        self, model: AdaptedModel, adapter_name: str, tensors: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """``adapter_state_dict``'s tensors (or the gathered ``tensors``), but ``prompt_embeddings``
        is what the model receives: for a method with a head, the head's output (computed in eval
        mode: no dropout), as Hugging Face PEFT saves it; the head itself is not saved.

        The head runs in a copy of the module built on the meta device and given the tensors,
        so gathered tensors are used as they are (the live module may hold shards only).
        """
        source = dict(self.adapter_state_dict(model, adapter_name) if tensors is None else tensors)
        head = {key.removeprefix(HEAD_PREFIX): source.pop(key) for key in list(source) if key.startswith(HEAD_PREFIX)}
        saved = {key: tensor.detach() for key, tensor in source.items()}
        if not head:
            return saved
        config = model.peft_config[adapter_name]
        assert isinstance(config, PromptLearningConfig)
        module = self.build_module(config, torch.device("meta"), with_head=True)
        module.load_state_dict({"embedding.weight": saved[PROMPT_KEY], **head}, assign=True)
        module.eval()
        with torch.no_grad():
            saved[PROMPT_KEY] = module.tokens().detach()
        return saved
