"""Defects the incumbent's own test suite found here (issue "Nothing silent, round two"), one test each.

Each asserts the base weights and outputs bit for bit where data could be lost; the
incumbent's behaviour for each row is in docs/reliability.md.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from peft_core import ConfigError, PeftError, PeftModel, get_peft_model, get_peft_model_state_dict
from peft_core.errors import AdapterLoadError
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from reliability.common import Snapshot, X
from support.models import MLP

LORA = {"target_modules": ["lin0", "lin1"], "init_lora_weights": False}


def _noisy(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))


# --- 1. hotswap into a merged adapter ---


def _saved_other(tmp_path: Path) -> tuple[Tensor, Path]:
    torch.manual_seed(0)
    other = get_peft_model(MLP(), LoraConfig(**LORA))
    _noisy(other, seed=5)
    other.save_pretrained(tmp_path / "b")
    with torch.no_grad():
        return other(X), tmp_path / "b"


def test_hotswap_into_a_merged_adapter_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    from peft_core import hotswap_adapter

    expected_b, folder = _saved_other(tmp_path)
    torch.manual_seed(0)
    model = get_peft_model(MLP(), LoraConfig(**LORA))
    base = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer" in k}
    model.merge_adapter()
    before = Snapshot.of(model, X)
    with pytest.raises(AdapterLoadError, match="currently merged.*unmerge_adapter"):
        hotswap_adapter(model, folder)
    before.assert_same(Snapshot.of(model, X))
    model.unmerge_adapter()  # the documented way: unmerge, swap, merge again
    assert all(torch.equal(model.get_base_model().state_dict()[k], v) for k, v in base.items())
    hotswap_adapter(model, folder)
    model.merge_adapter()
    with torch.no_grad():
        torch.testing.assert_close(model(X), expected_b, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    assert all(torch.equal(model.get_base_model().state_dict()[k], v) for k, v in base.items())


# --- 2. two adapters training the same base bias ---


@pytest.mark.parametrize("second_bias", ["lora_only", "all"])
def test_a_second_adapter_training_the_same_base_bias_is_refused(second_bias: str) -> None:
    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0", "lin1"], bias="all"))
    before = Snapshot.of(model, X)
    with pytest.raises(ConfigError, match="would train base tensors that adapter 'default' trains too"):
        model.add_adapter("second", LoraConfig(target_modules=["lin0"], bias=second_bias))  # type: ignore[arg-type]
    before.assert_same(Snapshot.of(model, X))
    assert list(model.peft_config) == ["default"]
    model.add_adapter("third", LoraConfig(target_modules=["lin0"], bias="none"))  # no shared tensor: fine


# --- 3. modules_to_save on a container ---


class WithContainers(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"a": nn.Linear(16, 3)})
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(3))])


@pytest.mark.parametrize(("entry", "kind"), [("heads", "ModuleDict"), ("scales", "ParameterList")])
def test_modules_to_save_naming_a_container_is_refused_up_front(entry: str, kind: str) -> None:
    model = WithContainers()
    with pytest.raises(ConfigError, match=f"modules_to_save entry '{entry}' is a {kind}, a container"):
        get_peft_model(model, LoraConfig(target_modules=["lin0"], modules_to_save=[entry]))
    assert "peft_config" not in model.__dict__ and not any(p.requires_grad is False for p in model.parameters())


# --- 4 and 5. modules_to_save wrappers: attributes, keyword calls, per-row tuples ---


class Vision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, *, pixel_values: Tensor) -> Tensor:
        return self.proj(pixel_values)


class TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision = Vision()
        self.lin = nn.Linear(4, 4)
        self.gru = nn.GRU(4, 4, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(self.vision(pixel_values=self.lin(x)))
        return out


def test_a_saved_module_passes_attributes_through_and_takes_keyword_calls() -> None:
    base = TwoTowers()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(target_modules=["lin"], modules_to_save=["vision"]))
    wrapped = model.get_base_model().vision
    assert wrapped.proj is wrapped.modules_to_save["default"].proj  # the copy in use, as the incumbent gives
    with model.disable_adapter():
        assert wrapped.proj is base.vision.proj or torch.equal(wrapped.proj.weight, base.vision.proj.weight)
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(pixel_values=x), base.vision(pixel_values=x), atol=0, rtol=0)


def test_per_row_batches_through_a_saved_module_returning_a_tuple_are_refused_clearly() -> None:
    model = get_peft_model(TwoTowers(), LoraConfig(target_modules=["lin"], modules_to_save=["gru"]))
    model.add_adapter("other", LoraConfig(target_modules=["lin"], modules_to_save=["gru"]))
    x = torch.randn(3, 2, 4)
    with pytest.raises(PeftError, match="need a module returning one tensor; GRU returns a tuple"):
        model(x, adapter_names=["default", "other", "__base__"])
    with torch.no_grad():  # nothing stays routed: the next call is the plain active adapter
        assert torch.equal(model(x), model(x))
    assert all(getattr(m, "row_routing", None) is None for m in model.modules())


# --- 6. checkpoint keys whatever wraps the model ---


class FullyShardedDataParallel(nn.Module):
    """Stands in for torch's FSDP1 wrapper (which needs an accelerator): its module tree."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = module

    def forward(self, *args: Any) -> Any:
        return self._fsdp_wrapped_module(*args)


def _wrapped(kind: str, model: PeftModel) -> nn.Module:
    if kind == "fsdp1-inner":  # FSDP1 with an auto-wrap policy: each linear layer wrapped
        for name in ("lin0", "lin1"):
            inner = model.get_base_model()
            setattr(inner, name, FullyShardedDataParallel(getattr(inner, name)))
        return FullyShardedDataParallel(model)
    if kind == "checkpointing":
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        inner = model.get_base_model()
        inner.lin1 = checkpoint_wrapper(inner.lin1)
        return model
    return torch.compile(model)  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["fsdp1-inner", "checkpointing", "compile"])
def test_checkpoint_keys_are_the_same_whatever_wraps_the_model(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0", "lin1"], bias="all", init_lora_weights=False))
    plain = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    wrapped = _wrapped(kind, model)
    keys = get_peft_model_state_dict(wrapped)
    assert set(keys) == set(plain) and all(torch.equal(keys[k], plain[k]) for k in plain)
    from peft_core.integrations.distributed import save_pretrained

    if kind == "fsdp1-inner":  # FSDP1's shards cannot be gathered here (accelerator only): the model's own save
        model.save_pretrained(tmp_path)
    else:
        save_pretrained(wrapped, tmp_path)
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(MLP(), tmp_path)  # an unwrapped model takes it
    assert all(torch.equal(get_peft_model_state_dict(loaded)[k], v) for k, v in plain.items())


# --- 8. save options that were silently ignored ---


def test_safe_serialization_false_is_one_clear_error(tmp_path: Path) -> None:
    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"]))
    with pytest.raises(PeftError, match="safe_serialization=False asks for a pickled adapter_model.bin"):
        model.save_pretrained(tmp_path, safe_serialization=False)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_save_arguments_are_named_not_dropped(tmp_path: Path) -> None:
    model = get_peft_model(MLP(), LoraConfig(target_modules=["lin0"]))
    with pytest.warns(UserWarning, match=r"save_pretrained: ignored arguments \['max_shard_size'\]"):
        model.save_pretrained(tmp_path, max_shard_size="1GB")


# --- 9. the incumbent's warnings ---


def test_a_second_merge_says_nothing_was_done() -> None:
    model = get_peft_model(MLP(), IA3Config(target_modules=["lin0"]))
    model.merge_adapter()
    weight = model.get_base_model().lin0.base_layer.weight.clone()
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do."):
        model.merge_adapter()
    assert torch.equal(model.get_base_model().lin0.base_layer.weight, weight)


def test_a_user_set_base_model_name_that_differs_is_kept_with_a_warning() -> None:
    from support.models import tiny_llama

    base = tiny_llama()
    base.config.name_or_path = "org/llama-tiny"
    with pytest.warns(UserWarning, match="base_model_name_or_path is 'my/name' but the model was loaded from"):
        model = get_peft_model(base, LoraConfig(target_modules=["q_proj"], base_model_name_or_path="my/name"))
    assert model.peft_config["default"].base_model_name_or_path == "my/name"
    other = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"]))
    assert other.peft_config["default"].base_model_name_or_path is None  # from a config: no name to record


# --- 10. the model card ---


def test_a_model_card_is_written_and_a_users_own_card_is_kept(tmp_path: Path) -> None:
    from support.models import tiny_llama

    base = tiny_llama()
    base.config.name_or_path = "org/llama-tiny"
    model = get_peft_model(base, LoraConfig(target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "new")
    card = (tmp_path / "new" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model: org/llama-tiny\npipeline_tag: text-generation\n")
    assert "- base_model:adapter:org/llama-tiny" in card and "- lora" in card and "- peft-core " in card
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my notes")
    model.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "README.md").read_text() == "my notes"


@pytest.mark.incumbent
@pytest.mark.parametrize(
    ("targets", "extra", "choice"),
    [
        (["embed_tokens", "q_proj"], {}, "auto"),  # an embedding is a target: saved, with a warning
        (["q_proj"], {"trainable_token_indices": [1, 5]}, "auto"),  # only the rows: no embedding
        (["q_proj"], {}, "auto"),
        (["q_proj"], {}, True),
        (["embed_tokens", "q_proj"], {}, False),
    ],
    ids=["embedding-target", "trainable-tokens", "no-embedding", "forced", "refused"],
)
def test_save_embedding_layers_saves_what_the_incumbent_saves(
    targets: list[str], extra: dict[str, Any], choice: Any, tmp_path: Path
) -> None:
    import peft
    from safetensors.torch import load_file

    from support.models import tiny_llama

    saved: dict[str, list[str]] = {}
    warned: dict[str, bool] = {}
    for name, library in (("hf", peft), ("ours", None)):
        settings = {"r": 2, "target_modules": targets, **extra}
        if library is None:
            model: Any = get_peft_model(tiny_llama(), LoraConfig(**settings))
        else:
            model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**settings))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model.save_pretrained(tmp_path / name, save_embedding_layers=choice)
        warned[name] = any("embedding layers" in str(w.message) for w in record)
        saved[name] = sorted(load_file(tmp_path / name / "adapter_model.safetensors"))
    assert saved["ours"] == saved["hf"]
    assert warned["ours"] == warned["hf"]
    assert any(
        k.endswith("embed_tokens.base_layer.weight") or k.endswith("embed_tokens.weight") for k in saved["ours"]
    ) == (choice is True or (choice == "auto" and "embed_tokens" in targets))


def test_a_resized_vocabulary_saves_the_embeddings_with_a_warning(tmp_path: Path) -> None:
    # The rule: "auto" saves resized embeddings (read from the local base model's config.json).
    from safetensors.torch import load_file

    from support.models import tiny_llama

    tiny_llama().save_pretrained(tmp_path / "base")
    model = tiny_llama()
    model.resize_token_embeddings(model.config.vocab_size + 8, mean_resizing=False)
    peft_model = get_peft_model(
        model, LoraConfig(r=2, target_modules=["q_proj"], base_model_name_or_path=str(tmp_path / "base"))
    )
    with pytest.warns(UserWarning, match="vocabulary was resized"):
        peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    embedding = saved["base_model.model.model.embed_tokens.weight"]
    assert embedding.shape[0] == model.config.vocab_size
    assert torch.equal(embedding, model.get_input_embeddings().weight.detach())
    peft_model.save_pretrained(tmp_path / "plain", save_embedding_layers=False)
    assert not any("embed_tokens" in k for k in load_file(tmp_path / "plain" / "adapter_model.safetensors"))
