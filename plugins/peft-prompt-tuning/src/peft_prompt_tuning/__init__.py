"""peft-prompt-tuning: prompt tuning as a peft-core plugin, and the virtual-token machinery
that the other prompt-learning plugins (peft-p-tuning, peft-prefix-tuning) build on."""

from __future__ import annotations

from peft_prompt_tuning.base import MODULES_PREFIX, PROMPT_KEY, PromptLearningTuner
from peft_prompt_tuning.config import PromptTuningConfig, PromptTuningInit
from peft_prompt_tuning.learning import PROMPT_TASKS, PromptLearningConfig, input_embeddings, model_dimensions
from peft_prompt_tuning.prepend import VirtualTokenTuner
from peft_prompt_tuning.tokens import VirtualTokens, new_embedding
from peft_prompt_tuning.tuner import PromptTuningTuner

__all__ = [
    "MODULES_PREFIX",
    "PROMPT_KEY",
    "PROMPT_TASKS",
    "PromptLearningConfig",
    "PromptLearningTuner",
    "PromptTuningConfig",
    "PromptTuningInit",
    "PromptTuningTuner",
    "VirtualTokenTuner",
    "VirtualTokens",
    "input_embeddings",
    "model_dimensions",
    "new_embedding",
]
