"""IA3 on small random GPT-2 (Conv1D), BERT and Llama models: training, generation, Hugging Face PEFT parity.

Base outputs at init, merge/unmerge, save/load and per-row batches on these models are
checked by the conformance suite (tests/conformance/test_ia3_conformance.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import peft
import pytest
import torch
from torch import nn

from peft_core import PeftModel, get_peft_model, get_peft_model_state_dict
from peft_ia3 import IA3Config, IA3Layer
from support.models import tiny_bert, tiny_gpt2, tiny_llama, token_ids
from support.training import train

# Hugging Face PEFT's default IA3 targets for these architectures.
MODELS: dict[str, tuple[Callable[[], nn.Module], list[str], list[str], list[str] | None]] = {
    "gpt2": (tiny_gpt2, ["c_attn", "mlp.c_proj"], ["mlp.c_proj"], None),
    "bert": (tiny_bert, ["key", "value", "output.dense"], ["output.dense"], ["classifier"]),
    "llama": (tiny_llama, ["k_proj", "v_proj", "down_proj"], ["down_proj"], None),
}


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # type: ignore[no-any-return]


def _config(name: str, **kwargs: object) -> IA3Config:
    _, targets, feedforward, to_save = MODELS[name]
    defaults = {
        "target_modules": targets,
        "feedforward_modules": feedforward,
        "modules_to_save": to_save,
        "fan_in_fan_out": name == "gpt2",  # Conv1D stores (in, out)
    }
    return IA3Config(**(defaults | kwargs))


def _peft(name: str, **kwargs: object) -> tuple[nn.Module, PeftModel]:
    base = MODELS[name][0]()
    return base, get_peft_model(copy.deepcopy(base), _config(name, **kwargs))


def _randomize(model: nn.Module, adapter_name: str = "default") -> None:
    """Vectors in [0.5, 1.5): far from the identity, safely away from zero."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, IA3Layer) and adapter_name in layer.ia3_l:
                layer.ia3_l[adapter_name].copy_(torch.rand_like(layer.ia3_l[adapter_name]) + 0.5)


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_moves_only_the_vectors(name: str) -> None:
    # IA3 has few parameters: on the causal LMs train every linear layer to see a clear drop.
    causal = {"target_modules": "all-linear", "feedforward_modules": None}
    base, model = _peft(name, **(causal if name != "bert" else {}))
    model.eval()  # no dropout: the loss curve is deterministic
    ids = token_ids(batch=4, length=8)
    labels = ids if name != "bert" else torch.tensor([0, 1, 0, 1])
    losses = train(model, lambda: model(input_ids=ids, labels=labels).loss, steps=15, lr=0.3)
    assert losses[-1] < losses[0] - 0.2  # nats; measured drops: 0.27 to 0.41
    frozen = {k: v for k, v in model.unload().state_dict().items() if not k.startswith("classifier")}
    assert all(torch.equal(value, base.state_dict()[key]) for key, value in frozen.items())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_goes_through_the_vectors(name: str) -> None:
    _, model = _peft(name)
    _randomize(model)
    ids = token_ids(batch=1, length=4)
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    ours = model.generate(input_ids=ids, **kwargs)
    assert ours.shape == (1, 9)
    merged = model.merge_and_unload()
    assert torch.equal(merged.generate(input_ids=ids, **kwargs), ours)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # inside Hugging Face PEFT
@pytest.mark.parametrize("name", MODELS)
def test_same_vectors_give_hugging_face_peft_outputs(name: str) -> None:
    base, model = _peft(name, modules_to_save=None)
    _randomize(model)
    _, targets, feedforward, _ = MODELS[name]
    their_config = peft.IA3Config(
        target_modules=targets, feedforward_modules=feedforward, fan_in_fan_out=name == "gpt2"
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), their_config)
    ours_state = get_peft_model_state_dict(model)
    their_state = peft.get_peft_model_state_dict(theirs)
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in their_state.items()}
    peft.set_peft_model_state_dict(theirs, ours_state)
    ids = token_ids()
    assert torch.allclose(_logits(model, ids), _logits(theirs, ids), atol=1e-6)
    theirs.merge_adapter()
    model.merge_adapter()
    merged_ours, merged_theirs = model.get_base_model().state_dict(), theirs.get_base_model().state_dict()
    for key in ours_state:
        path = key.removeprefix("base_model.model.").removesuffix(".ia3_l")
        ours_w, theirs_w = merged_ours[f"{path}.base_layer.weight"], merged_theirs[f"{path}.base_layer.weight"]
        assert torch.allclose(ours_w, theirs_w, atol=1e-6), key
