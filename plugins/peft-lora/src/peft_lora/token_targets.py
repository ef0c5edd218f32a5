"""Which layers ``trainable_token_indices`` trains, and which heads share their weight (see ``trainable_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peft_core.contract import AdapterLayer, ConfigError, TargetNotFoundError, describe_unmatched, matches
from peft_lora.config import LoraConfig
from peft_lora.parameter import selects
from peft_lora.trainable_tokens import TiedTokens, TrainableTokens
from peft_lora.weight_tying import modules_sharing

INPUT_EMBEDDING = "embed_tokens"  # Hugging Face PEFT's name for the input embedding of models without a getter


@dataclass(frozen=True)
class TokenTarget:
    """A layer whose rows ``indices`` train; ``tied_to``: the path of the embedding whose tables it reads."""

    indices: list[int]
    tied_to: str | None = None


def token_targets(model: nn.Module, config: LoraConfig) -> dict[str, TokenTarget]:
    """The token layers by path, embeddings first, then the heads tied to them (module order within)."""
    spec = config.trainable_token_indices
    if spec is None:
        return {}
    paths = [path for path, _ in model.named_modules() if path]
    named = spec if isinstance(spec, dict) else {_input_embedding(model): spec}
    missing = [entry for entry in named if not any(matches(path, [entry]) for path in paths)]
    if missing:
        raise TargetNotFoundError(describe_unmatched("trainable_token_indices", missing, paths))
    chosen: dict[str, TokenTarget] = {}
    for path, module in model.named_modules():
        entry = next((e for e in named if path and matches(path, [e])), None)
        if entry is None:
            continue
        base = module.base_layer if isinstance(module, TrainableTokens | TiedTokens) else module
        if isinstance(module, AdapterLayer) and not isinstance(module, TrainableTokens | TiedTokens):
            raise ConfigError(f"trainable_token_indices: {path!r} already holds another adapter layer")
        if not isinstance(base, nn.Embedding | nn.Linear):
            raise ConfigError(
                f"trainable_token_indices: {path!r} is a {type(base).__name__}; name embedding (or head) layers"
            )
        if selects(config.target_modules, path, base):
            raise ConfigError(
                f"{path!r} is selected by target_modules and by trainable_token_indices; a module takes one of "
                "them: leave it out of target_modules"
            )
        chosen[path] = TokenTarget(list(named[entry]))
    for path, target in list(chosen.items()):
        for head in _tied_heads(model, path):
            listed = chosen.get(head)
            if listed is None or listed.indices == target.indices:  # the incumbent ties them unless indices differ
                chosen[head] = TokenTarget(target.indices, tied_to=path)
            elif config.ensure_weight_tying:
                raise ConfigError(
                    f"ensure_weight_tying=True, but the tied layers {path!r} and {head!r} get different "
                    f"trainable_token_indices ({target.indices} and {listed.indices}); give both the same indices "
                    "or set ensure_weight_tying=False"
                )
    return dict(sorted(chosen.items(), key=lambda item: item[1].tied_to is not None))


def _input_embedding(model: nn.Module) -> str:
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    return next((path for path, module in model.named_modules() if module is embedding and path), INPUT_EMBEDDING)


def _tied_heads(model: nn.Module, embedding_path: str) -> list[str]:
    """Modules (other than the embedding) whose weight is the embedding's own: tied output heads."""
    embedding = model.get_submodule(embedding_path)
    weight = (embedding.base_layer if isinstance(embedding, AdapterLayer) else embedding).get_parameter("weight")
    return modules_sharing(model, embedding_path, weight)
