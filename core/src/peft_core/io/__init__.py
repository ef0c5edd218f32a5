"""Checkpoints: the Hugging Face PEFT adapter format, state dicts, pre-checks, atomic files."""
