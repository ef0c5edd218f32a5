"""peft-bitfit: BitFit-style bias deltas as a peft-core plugin (a test fixture, not a product)."""

from peft_bitfit.config import BitFitConfig
from peft_bitfit.layer import BiasDeltaLayer
from peft_bitfit.tuner import BitFitTuner

__all__ = ["BiasDeltaLayer", "BitFitConfig", "BitFitTuner"]
