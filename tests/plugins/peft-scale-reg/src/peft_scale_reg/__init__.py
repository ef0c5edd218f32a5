"""peft-scale-reg: regularised output scaling, a test method for the v2 lifecycle hooks."""

from peft_scale_reg.method import ScaleLayer, ScaleRegConfig, ScaleRegTuner

__all__ = ["ScaleLayer", "ScaleRegConfig", "ScaleRegTuner"]
