"""Task-type models, as in Hugging Face PEFT: ``PeftModel`` for one kind of model head.

``get_peft_model`` and ``PeftModel.from_pretrained`` choose the class from the config's
``task_type`` (a ``TaskType`` or its string). Each class only fixes the task: an adapter
without a ``task_type`` gets the class's, one with another task is refused. What a task
changes lives elsewhere: the classification heads trained with the adapter
(``modules_to_save``) in the engine, and how a prompt-learning method changes the inputs
of each task in its tuner's hooks.
"""

from __future__ import annotations

from peft_core.api.peft_model import PeftModel
from peft_core.contract.config import TaskType


class PeftModelForCausalLM(PeftModel, task_type=TaskType.CAUSAL_LM.value):
    """A decoder-only language model (``AutoModelForCausalLM``)."""


class PeftModelForSequenceClassification(PeftModel, task_type=TaskType.SEQ_CLS.value):
    """A sequence classifier; its head (``classifier`` or ``score``) trains and is saved with the adapter."""


class PeftModelForSeq2SeqLM(PeftModel, task_type=TaskType.SEQ_2_SEQ_LM.value):
    """An encoder-decoder language model (``AutoModelForSeq2SeqLM``: T5, BART...)."""


class PeftModelForTokenClassification(PeftModel, task_type=TaskType.TOKEN_CLS.value):
    """A token classifier; its head (``classifier`` or ``score``) trains and is saved with the adapter."""


class PeftModelForQuestionAnswering(PeftModel, task_type=TaskType.QUESTION_ANS.value):
    """Extractive question answering; its head (``qa_outputs``) trains and is saved with the adapter."""


class PeftModelForFeatureExtraction(PeftModel, task_type=TaskType.FEATURE_EXTRACTION.value):
    """A model whose hidden states are the output (``AutoModel``)."""


#: Hugging Face PEFT's name for the table ``task_type`` -> class.
MODEL_TYPE_TO_PEFT_MODEL_MAPPING: dict[str, type[PeftModel]] = PeftModel.task_models


def peft_model_class(task_type: str | TaskType | None) -> type[PeftModel]:
    """The class for ``task_type``: a task-type class, or ``PeftModel`` for none (or an unknown one)."""
    key = task_type.value if isinstance(task_type, TaskType) else task_type
    return PeftModel.task_models.get(str(key), PeftModel)
