"""Where ``PeftModel`` calls the tuner's model-level hooks (``prepare_inputs``,
``prepare_generate``, ``prepare_generation_inputs``, ``adapter_loss``, ``on_step_end``).

The hooks run only while adapters are enabled and some adapter is active, and only for a
tuner that overrides them: LoRA's forward pays nothing for hooks it does not have.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from peft_core.engine import TunedModel
from peft_core.errors import PeftError


class ModelHooks:
    """The hook calls of one ``PeftModel`` (its ``TunedModel`` is what the hooks receive)."""

    def __init__(self, tuned: TunedModel) -> None:
        self.tuned = tuned

    def _enabled(self) -> bool:
        return not self.tuned.disabled and bool(self.tuned.active_adapters)

    def forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``model(*args, **kwargs)`` with ``prepare_inputs`` before and ``adapter_loss`` after."""
        tuned = self.tuned
        hooks = tuned.model_hooks
        if not hooks or not self._enabled():
            return tuned.model(*args, **kwargs)
        if "prepare_inputs" in hooks:
            args, kwargs = tuned.tuner.prepare_inputs(tuned, args, dict(kwargs))
        outputs = tuned.model(*args, **kwargs)
        if "adapter_loss" in hooks and isinstance(getattr(outputs, "loss", None), Tensor):
            extra = tuned.tuner.adapter_loss(tuned, outputs)
            if extra is not None:
                outputs.loss = outputs.loss + extra
        return outputs

    def generate_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``generate``'s own arguments after the tuner's ``prepare_generate``."""
        if "prepare_generate" not in self.tuned.model_hooks or not self._enabled():
            return args, kwargs
        return self.tuned.tuner.prepare_generate(self.tuned, args, dict(kwargs))

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Inside the block, the model's ``prepare_inputs_for_generation`` also runs the tuner's
        ``prepare_generation_inputs`` on each step's inputs."""
        tuned = self.tuned
        if "prepare_generation_inputs" not in tuned.model_hooks or not self._enabled():
            yield
            return
        model = tuned.model
        original: Any = getattr(model, "prepare_inputs_for_generation")  # noqa: B009 (nn.Module's __getattr__ is untyped)
        own = model.__dict__.get("prepare_inputs_for_generation")
        tuner = tuned.tuner

        @functools.wraps(original)
        def prepare(*args: Any, **kwargs: Any) -> Any:
            return tuner.prepare_generation_inputs(tuned, original(*args, **kwargs))

        model.__dict__["prepare_inputs_for_generation"] = prepare
        try:
            yield
        finally:
            if own is None:
                del model.__dict__["prepare_inputs_for_generation"]  # the class's method again
            else:
                model.__dict__["prepare_inputs_for_generation"] = own

    def check_per_row(self) -> None:
        """Refuse per-row adapters for a model-level adapter that does not declare them."""
        tuned = self.tuned
        if tuned.adapter_modules and not type(tuned.tuner).capabilities.per_row:
            raise PeftError(
                f"per-row adapters (adapter_names=...) are not supported by {tuned.tuner.name} "
                "(capabilities.per_row); run one adapter per batch (set_adapter) instead"
            )

    def on_step_end(self, global_step: int) -> None:
        if "on_step_end" in self.tuned.model_hooks:
            self.tuned.tuner.on_step_end(self.tuned, global_step)
