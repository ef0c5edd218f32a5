"""Prompt-tune all-MiniLM-L6-v2 to tell positive from negative words, against a linear probe.

The same data, split and linear probe as ``sentiment_demo.py`` (the VADER lexicon; a
frozen mean-pooled encoder with a trained linear head). Here the encoder stays frozen too,
but learns ``--virtual-tokens`` input vectors put in front of every word (prompt tuning,
``task_type="SEQ_CLS"``: the head trains with them), starting from the embeddings of a
text read with the model's own tokenizer (``prompt_tuning_init="TEXT"``). The script
prints both held-out accuracies, the trainable share, saves the adapter, reloads it into
a fresh model and checks that it predicts exactly what the trained one does.

    python examples/prompt_tuning_demo.py --epochs 3 --virtual-tokens 8 --output-dir prompt-adapter
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a hub

import torch
from sentiment_demo import MODEL_DIR, Encoded, accuracy, directory_size, linear_probe, load_lexicon, predict, split
from torch import Tensor, nn
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers import logging as hf_logging

from peft_core import PeftModel, get_peft_model
from peft_prompt_tuning import PromptTuningConfig

hf_logging.set_verbosity_error()
INIT_TEXT = "Is the sentiment of this word positive or negative?"


class PromptableClassifier(nn.Module):
    """The demo's mean-pooled MiniLM classifier, taking ``inputs_embeds`` too (prompt tuning passes
    the virtual tokens that way) and exposing the encoder's config and token embeddings."""

    def __init__(self, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(MODEL_DIR)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, num_labels)

    @property
    def config(self) -> object:
        return self.encoder.config

    def get_input_embeddings(self) -> nn.Module:
        embeddings: nn.Module = self.encoder.get_input_embeddings()
        return embeddings

    def forward(
        self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        ).last_hidden_state
        mask = (attention_mask if attention_mask is not None else torch.ones(hidden.shape[:2])).unsqueeze(-1)
        pooled = (hidden * mask.to(hidden.dtype)).sum(1) / mask.sum(1).clamp(min=1)
        logits: Tensor = self.classifier(pooled)
        return logits


def train(model: nn.Module, data: Encoded, epochs: int, lr: float) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = epochs * ((len(data.labels) + 63) // 64)
    with tqdm(total=steps, desc="prompt tuning", unit="step", mininterval=2) as bar:
        for epoch in range(epochs):
            model.train()
            for ids, mask, labels in data.batches(64, shuffle=True, seed=epoch):
                loss = nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--virtual-tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--output-dir", type=Path, default=Path("prompt-adapter"))
    parser.add_argument("--limit", type=int, default=0, help="use only this many words (0: all), for smoke tests")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    pairs = load_lexicon()
    if args.limit:
        pairs = random.Random(1).sample(pairs, args.limit)
    train_pairs, test_pairs = split(pairs, held_out=0.2, seed=0)
    print(f"VADER lexicon: {len(pairs)} words; {len(train_pairs)} train, {len(test_pairs)} held out")
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    train_data, test_data = Encoded(tokenizer, train_pairs), Encoded(tokenizer, test_pairs)

    probe_acc = linear_probe(train_data, test_data, args.epochs)
    print(f"frozen encoder + linear probe: held-out accuracy {probe_acc:.1%}")

    torch.manual_seed(0)
    config = PromptTuningConfig(
        task_type="SEQ_CLS",
        num_virtual_tokens=args.virtual_tokens,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text=INIT_TEXT,
        tokenizer_name_or_path=str(MODEL_DIR),
    )
    model = get_peft_model(PromptableClassifier(), config)
    trainable, total = model.get_nb_trainable_parameters()
    print(
        f"prompt tuning, {args.virtual_tokens} virtual tokens (and the head): {trainable:,} trainable of "
        f"{total:,} parameters ({100 * trainable / total:.3f}%)"
    )
    train(model, train_data, args.epochs, args.lr)
    logits = predict(model, test_data)
    prompt_acc = accuracy(logits, test_data.labels)
    print(f"prompt tuning: held-out accuracy {prompt_acc:.1%} (linear probe: {probe_acc:.1%})")

    model.save_pretrained(args.output_dir)
    print(f"adapter saved to {args.output_dir}: {directory_size(args.output_dir) / 1e3:.1f} kB on disk")
    reloaded = PeftModel.from_pretrained(PromptableClassifier(), args.output_dir)
    reload_diff = (predict(reloaded, test_data) - logits).abs().max().item()
    print(f"reloaded adapter: max logit difference to the trained model {reload_diff:.2e}")
    if reload_diff > 1e-5:
        raise SystemExit("the reloaded adapter predicts differently from the trained one")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
