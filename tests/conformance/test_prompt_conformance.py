"""Prompt tuning, p-tuning and prefix tuning meet the conformance suite (peft_core.testing).

They declare no capability (a virtual token merges into no weight; one adapter runs per
batch), so the suite checks that merging, per-row batches, hotswapping and weighted
combination are refused with clear errors, besides save/load, isolation of adapters,
disabling, unloading, the trainable set and the checkpoint keys.
"""

from __future__ import annotations

from conformance_models import OnPromptModel
from peft_core.testing import TunerConformance
from peft_p_tuning import PromptEncoderConfig
from peft_prefix_tuning import PrefixTuningConfig
from peft_prompt_tuning import PromptTuningConfig
from support.models import tiny_bart, tiny_bert, tiny_bert_for, tiny_gpt2, tiny_llama, tiny_t5


class TestPromptTuningOnGpt2(OnPromptModel, TunerConformance):
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    second_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    expected_keys = frozenset({"prompt_embeddings"})


class TestPromptTuningOnBertClassifier(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_bert)
    config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3)
    expected_keys = frozenset({"prompt_embeddings", "base_model.classifier.weight", "base_model.classifier.bias"})
    atol, merge_atol = 1e-8, 1e-7  # BERT's random-init logits are ~5e-3


class TestPromptTuningOnT5(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_t5)
    decoder_length = 4
    config = PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3)


class TestPTuningMlpOnLlama(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_llama)
    config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16)


class TestPTuningLstmOnBertTokens(OnPromptModel, TunerConformance):
    build = staticmethod(lambda: tiny_bert_for("token"))
    config = PromptEncoderConfig(
        task_type="TOKEN_CLS", num_virtual_tokens=3, encoder_hidden_size=8, encoder_reparameterization_type="LSTM"
    )


class TestPrefixTuningOnLlama(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_llama)  # grouped-query attention: prefixes of the 2 key/value heads
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    expected_keys = frozenset({"prompt_embeddings"})


class TestPrefixProjectionOnGpt2(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_gpt2)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True)


class TestPrefixTuningOnBart(OnPromptModel, TunerConformance):
    build = staticmethod(tiny_bart)
    decoder_length = 4
    config = PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3)


class TestPrefixTuningOnBertFeatures(OnPromptModel, TunerConformance):
    build = staticmethod(lambda: tiny_bert_for("none"))
    config = PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3)
