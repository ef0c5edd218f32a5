"""Small models for tests: plain torch modules and random transformers models from configs."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Embedding -> two linears -> head; every LoRA layer type but Conv has a place here."""

    def __init__(self, vocab: int = 20, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.lin0 = nn.Linear(width, width)
        self.lin1 = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.lin0(self.emb(x)))
        return self.head(torch.relu(self.lin1(h)))


class ConvNet(nn.Module):
    """Conv1d and Conv2d paths whose outputs are summed per row: (batch, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 6, 3, padding=1)
        self.conv2d = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:  # x: (batch, 4, 8, 8)
        a = self.conv1d(x.flatten(2)).mean(-1)
        b = self.conv2d(x).mean((-1, -2))
        return self.head(torch.cat([a, b], -1))


class ConvMix(nn.Module):
    """The convolutions that structured methods treat apart: a 1x1 Conv2d, a grouped 3x3 Conv2d,
    Conv1d with kernels 3 and 1, and a linear head; (batch, 4, 8, 8) -> (batch, classes)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.point = nn.Conv2d(4, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.seq = nn.Conv1d(8, 12, 3, padding=1)
        self.seq_point = nn.Conv1d(12, 6, 1)
        self.head = nn.Linear(6, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.grouped(torch.relu(self.point(x))))
        s = self.seq_point(torch.relu(self.seq(h.flatten(2))))
        return self.head(s.mean(-1))


class GroupedConvNet(nn.Module):
    """Grouped convolutions: Conv1d (groups 2), Conv2d (groups 2, stride 2), a depthwise Conv2d
    (groups 8) and a Conv3d (groups 2); (batch, 4, 8, 8) -> (batch, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 6, 3, padding=1, groups=2)
        self.conv2d = nn.Conv2d(4, 8, 3, padding=1, stride=2, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv3d = nn.Conv3d(4, 4, 3, padding=1, groups=2)
        self.head = nn.Linear(18, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv1d(x.flatten(2)).mean(-1)
        b = self.depthwise(torch.relu(self.conv2d(x))).mean((-1, -2))
        c = self.conv3d(x.unsqueeze(2)).mean((-1, -2, -3))
        result: Tensor = self.head(torch.cat([a, b, c], -1))
        return result


class AttentionNet(nn.Module):
    """``nn.MultiheadAttention`` (sequence first, as Hugging Face PEFT's tests use it) then a linear head:
    (seq, batch, 10) -> (seq, batch, 2)."""

    def __init__(self, kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(10, 2, kdim=kdim, vdim=vdim)
        self.lin0 = nn.Linear(10, 2)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.mha(x, x, x)
        result: Tensor = self.lin0(h)
        return result


class EncoderNet(nn.Module):
    """Two ``nn.TransformerEncoderLayer``s (batch first: eligible for PyTorch's fused inference path)
    and a head: (batch, seq, 8) -> (batch, seq, 3)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.head(self.encoder(x))
        return result


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_bert(seed: int = 0, num_labels: int = 2) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def tiny_llama(seed: int = 0, tie_word_embeddings: bool = False) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=32,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def token_ids(batch: int = 2, length: int = 8, vocab: int = 64, seed: int = 0) -> Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def tiny_mixtral(seed: int = 0) -> nn.Module:
    """A mixture of experts whose expert weights are bare 3-D parameters (``mlp.experts.gate_up_proj``)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return MixtralForCausalLM(config).eval()


def tiny_t5(seed: int = 0) -> nn.Module:
    """A T5 encoder-decoder (``SEQ_2_SEQ_LM``); no end-of-sequence token, so generate runs to length."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=None,
    )
    return T5ForConditionalGeneration(config).eval()


def tiny_bart(seed: int = 0) -> nn.Module:
    """A BART encoder-decoder (``SEQ_2_SEQ_LM``, learned positions); no end-of-sequence token."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=None,
        decoder_start_token_id=2,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(config).eval()


def tiny_bert_for(head: str, seed: int = 0) -> nn.Module:
    """BERT with a head: ``"token"`` (TOKEN_CLS, 3 labels), ``"qa"`` (QUESTION_ANS) or ``"none"``
    (FEATURE_EXTRACTION)."""
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
        num_labels=2 if head == "qa" else 3,  # QA's head gives start and end logits
    )
    classes = {"token": BertForTokenClassification, "qa": BertForQuestionAnswering, "none": BertModel}
    model: nn.Module = classes[head](config)
    return model.eval()


def lively(model: nn.Module, std: float = 0.3, seed: int = 5) -> nn.Module:
    """``model`` with its weight matrices redrawn with a larger spread (N(0, std)): a tiny random model
    then generates varied tokens instead of one token over and over, so generation tests can tell
    a wrong position or cache step from a right one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model
