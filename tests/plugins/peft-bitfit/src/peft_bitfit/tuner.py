"""``BitFitTuner``: wraps each target that has a bias."""

from __future__ import annotations

from torch import nn

from peft_bitfit.config import BitFitConfig
from peft_bitfit.layer import BiasDeltaLayer
from peft_core.contract import AdapterLayer, BaseTuner, PeftConfig


class BitFitTuner(BaseTuner):
    """Bias deltas for any layer with a ``bias`` parameter (Linear, ConvNd, LayerNorm, BatchNorm...)."""

    name = "bitfit"
    config_class = BitFitConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        return BiasDeltaLayer(target)
