"""The user API: ``get_peft_model``, ``PeftModel`` and the low-level functions."""
