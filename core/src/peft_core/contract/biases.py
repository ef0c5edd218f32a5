"""Which base biases a method trains beside its adapters (the incumbent's ``bias`` option)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from peft_core.contract.layer import AdapterLayer, plain_modules

BiasChoice = Literal["none", "all", "lora_only"]


def trained_biases(model: nn.Module, bias: BiasChoice, layer_type: type[AdapterLayer]) -> dict[str, nn.Parameter]:
    """The bias parameters ``bias`` trains, by their path in ``model``.

    ``"lora_only"``: the base biases of the method's own layers (``layer_type``);
    ``"all"``: those and every other bias outside adapter layers (a ``modules_to_save`` copy
    keeps its own, saved whole); ``"none"``: none. For ``BaseTuner.extra_trainable_parameters``.
    """
    if bias == "none":
        return {}
    found: dict[str, nn.Parameter] = {}
    for path, module in plain_modules(model, root=True):
        if isinstance(module, layer_type):
            base_bias = getattr(module.base_layer, "bias", None)
            if isinstance(base_bias, nn.Parameter):
                found[f"{path}.base_layer.bias" if path else "base_layer.bias"] = base_bias
        elif (
            bias == "all"
            and not isinstance(module, AdapterLayer)  # a modules_to_save copy: saved whole, with its own bias
            and isinstance(own := module._parameters.get("bias"), nn.Parameter)
        ):
            found[f"{path}.bias" if path else "bias"] = own
    return found
