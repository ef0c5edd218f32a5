"""Integrations with training stacks: DDP/FSDP2/DeepSpeed helpers and transformers' Trainer.

Import the submodule you need (``peft_core.integrations.distributed``,
``peft_core.integrations.trainer``); each imports its optional dependency itself.
"""
