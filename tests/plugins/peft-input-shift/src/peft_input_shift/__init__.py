"""peft-input-shift: a prompt-style test method (a learned shift of the input embeddings)."""

from peft_input_shift.method import InputShiftConfig, InputShiftTuner

__all__ = ["InputShiftConfig", "InputShiftTuner"]
