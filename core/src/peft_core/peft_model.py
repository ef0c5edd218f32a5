"""``PeftModel``: a model with named adapters, in the Hugging Face PEFT user API."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from torch import Tensor, nn

from peft_core.activation_checkpointing import ActivationCheckpointing, is_checkpointing, require_input_grads
from peft_core.checkpoint import DEFAULT_ADAPTER, adapter_subdir, read_adapter, write_adapter
from peft_core.compat import fit_loaded_config, task_heads
from peft_core.config import PeftConfig
from peft_core.distributed import select_adapter_state_dict
from peft_core.errors import AdapterLoadError, MergeError, PeftError
from peft_core.layer import adapter_layers, adapter_rows, loading_every_tensor
from peft_core.loading import check_adapter_fits, describe_error
from peft_core.plugins import registry
from peft_core.state_dict import (
    LoadReport,
    get_peft_model_state_dict,
    load_checked_state_dict,
    raise_or_warn,
    set_peft_model_state_dict,
)
from peft_core.tuner import BaseTuner


class TunedModel(nn.Module):
    """Holds the user's model as ``.model``, so checkpoint keys read ``base_model.model.<path>``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


class PeftModel(ActivationCheckpointing, nn.Module):
    """Wraps a model whose targeted modules carry adapters.

    Unknown attributes fall through to the wrapped model (``generate``, ``config``...).
    All adapters on one model belong to one method (tuner).
    """

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig,
        adapter_name: str = DEFAULT_ADAPTER,
        autocast_adapter_dtype: bool = True,
    ) -> None:
        super().__init__()
        self.base_model = TunedModel(model)
        self.peft_config: dict[str, PeftConfig] = {}
        self.tuner: BaseTuner = registry.tuner_for_config(peft_config)()
        self.autocast_adapter_dtype = autocast_adapter_dtype
        self.add_adapter(adapter_name, peft_config)
        if is_checkpointing(model):  # switched on before wrapping: adapters need input grads
            require_input_grads(model)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_modules"):
                raise
            return getattr(self.base_model.model, name)

    # --- running ---

    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The wrapped model's forward; ``adapter_names`` picks an adapter per batch row."""
        with self._rows(adapter_names):
            return self.base_model.model(*args, **kwargs)

    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The wrapped model's ``generate``, with optional per-row adapters."""
        with self._rows(adapter_names):
            return self.get_base_model().generate(*args, **kwargs)  # type: ignore[operator]

    def _rows(self, adapter_names: Sequence[str] | None) -> Any:
        return nullcontext() if adapter_names is None else adapter_rows(self, adapter_names)

    # --- adapters ---

    @property
    def active_adapters(self) -> list[str]:
        return self.tuner.active_adapter_names(self.base_model.model)

    @property
    def active_adapter(self) -> str | list[str]:
        active = self.active_adapters
        return active[0] if len(active) == 1 else active

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig) -> None:
        """Add a new adapter (not made active unless it is the first one)."""
        if adapter_name in self.peft_config:
            raise PeftError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        if self.peft_config and not isinstance(peft_config, self.tuner.config_class):
            raise PeftError(
                f"this model holds {self.tuner.name} adapters; a {type(peft_config).__name__} cannot be added"
            )
        config = task_heads(peft_config, self.get_base_model()).model_copy()
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(
                getattr(self.get_base_model(), "config", None), "name_or_path", None
            )
        self.tuner.inject(
            self.get_base_model(), config, adapter_name, autocast_adapter_dtype=self.autocast_adapter_dtype
        )
        self.peft_config[adapter_name] = config

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Make these adapters active (trainability is not changed)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise PeftError(f"unknown adapters {unknown}; this model has {list(self.peft_config)}")
        self.tuner.set_active_adapters(self.get_base_model(), names)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; if it was the only active one, the first remaining becomes active."""
        if adapter_name not in self.peft_config:
            raise PeftError(f"unknown adapter {adapter_name!r}; this model has {list(self.peft_config)}")
        active = [n for n in self.active_adapters if n != adapter_name]
        self.tuner.delete_adapter(self.get_base_model(), adapter_name)
        del self.peft_config[adapter_name]
        if not active and self.peft_config:
            active = [next(iter(self.peft_config))]
        self.tuner.set_active_adapters(self.get_base_model(), active)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Inside the block the model computes its base outputs; nothing else changes."""
        model = self.get_base_model()
        if any(layer.merged for _, layer in adapter_layers(model)):
            raise MergeError("adapters are merged into the weights; call unmerge_adapter() before disabling them")
        self.tuner.set_disabled(model, True)
        try:
            yield
        finally:
            self.tuner.set_disabled(model, False)

    def add_weighted_adapter(
        self,
        adapters: Sequence[str],
        weights: Sequence[float],
        adapter_name: str,
        combination_type: str = "svd",
        **options: Any,
    ) -> None:
        """Add ``adapter_name``: a weighted combination of ``adapters`` (not made active).

        The tuner does the math (LoRA: ``"linear"``, ``"cat"`` (exact), ``"svd"`` with
        ``svd_rank=``); see docs/weighted-adapters.md for which is exact.
        """
        adapters, weights = list(adapters), [float(w) for w in weights]
        unknown = [n for n in adapters if n not in self.peft_config]
        if not adapters or unknown or len(weights) != len(adapters):
            raise PeftError(
                f"add_weighted_adapter needs known adapters and one weight each; got adapters={adapters} "
                f"(unknown: {unknown}, this model has {list(self.peft_config)}) and {len(weights)} weights"
            )
        if adapter_name in self.peft_config:
            raise PeftError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        config = self.tuner.add_weighted_adapter(
            self.get_base_model(),
            adapters,
            weights,
            adapter_name,
            combination_type,
            autocast_adapter_dtype=self.autocast_adapter_dtype,
            **options,
        )
        self.peft_config[adapter_name] = config

    # --- merging ---

    def merge_adapter(
        self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False, exact_unmerge: bool = True
    ) -> None:
        """Fold adapters (default: the active ones) into the base weights, all layers or none.

        ``exact_unmerge`` keeps (in CPU memory) what lets ``unmerge_adapter`` restore the
        base weights bit for bit; docs/reliability.md gives the cost and the tolerance without.
        """
        self.tuner.merge(self.get_base_model(), adapter_names, safe_merge, exact_unmerge=exact_unmerge)

    def unmerge_adapter(self) -> None:
        """Take merged adapters out of the base weights."""
        self.tuner.unmerge(self.get_base_model())

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> nn.Module:
        """Merge, then return the plain base model without adapter layers."""
        model = self.tuner.unload(self.get_base_model(), merge=True, adapter_names=adapter_names, safe=safe_merge)
        self.peft_config.clear()
        return model

    def unload(self) -> nn.Module:
        """Return the base model with adapter layers removed and original weights."""
        model = self.tuner.unload(self.get_base_model(), merge=False)
        self.peft_config.clear()
        return model

    # --- parameters ---

    def get_base_model(self) -> nn.Module:
        model = self.base_model.model
        assert isinstance(model, nn.Module)
        return model

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, adapters included."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        share = 100 * trainable / total if total else 0.0
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}")

    # --- checkpoints ---

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        selected_adapters: Sequence[str] | None = None,
        state_dict: Mapping[str, Tensor] | None = None,
        is_main_process: bool = True,
        **_: Any,
    ) -> None:
        """Write each adapter (default: all) in the Hugging Face PEFT layout, atomically.

        As in Hugging Face PEFT (and as its Trainer calls it): ``state_dict`` is a full
        model state dict gathered by the caller (named as ``self.state_dict()`` names it)
        to take the adapter tensors from; ``is_main_process=False`` writes nothing.
        Sharded models: see ``peft_core.distributed.save_pretrained``.
        """
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise PeftError(f"cannot save unknown adapters {unknown}; this model has {list(self.peft_config)}")
        if not is_main_process:
            return
        for name in names:
            if state_dict is None:
                tensors = get_peft_model_state_dict(self, name)
            else:
                tensors = select_adapter_state_dict(self, state_dict, name)
            write_adapter(adapter_subdir(save_directory, name), self.peft_config[name], tensors)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike[str],
        adapter_name: str = DEFAULT_ADAPTER,
        is_trainable: bool = False,
        strict: bool = True,
        autocast_adapter_dtype: bool = True,
    ) -> PeftModel:
        """Wrap ``model`` and load the adapter saved in directory ``model_id``.

        A load that fails raises ``AdapterLoadError`` and leaves ``model`` as it was.
        """
        config, tensors = read_adapter(model_id)
        config = fit_loaded_config(config, model)
        config.inference_mode = not is_trainable
        checked = check_adapter_fits(model, config, tensors, adapter_name, strict, model_id, autocast_adapter_dtype)
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            with loading_every_tensor(_covers_every_tensor(checked)):
                peft_model = cls(model, config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        except Exception as exc:  # injection rolled itself back; any failure of it is a load error here
            raise AdapterLoadError(f"adapter in {model_id} does not fit this model: {describe_error(exc)}") from exc
        try:
            _load_state_dict(peft_model, tensors, adapter_name, strict, checked)
        except BaseException:
            peft_model.tuner.unload(model, merge=False)
            for param, flag in grad_flags:
                param.requires_grad_(flag)
            raise
        if not is_trainable:
            peft_model.eval()  # as Hugging Face PEFT: no adapter dropout in inference
        return peft_model

    def load_adapter(
        self,
        model_id: str | os.PathLike[str],
        adapter_name: str,
        is_trainable: bool = False,
        strict: bool = True,
    ) -> LoadReport:
        """Add the adapter saved in ``model_id`` as ``adapter_name`` (not made active)."""
        config, tensors = read_adapter(model_id)
        config = fit_loaded_config(config, self.get_base_model())
        config.inference_mode = not is_trainable
        if adapter_name in self.peft_config:
            raise AdapterLoadError(f"adapter {adapter_name!r} already exists; delete_adapter() it or pick another name")
        checked = check_adapter_fits(
            self.get_base_model(), config, tensors, adapter_name, strict, model_id, self.autocast_adapter_dtype
        )
        try:
            with loading_every_tensor(_covers_every_tensor(checked)):
                self.add_adapter(adapter_name, config)
        except Exception as exc:  # injection rolled itself back
            raise AdapterLoadError(f"adapter in {model_id} does not fit this model: {describe_error(exc)}") from exc
        try:
            report = _load_state_dict(self, tensors, adapter_name, strict, checked)
        except BaseException:
            self.delete_adapter(adapter_name)
            raise
        if not is_trainable:
            self.eval()  # as Hugging Face PEFT: no adapter dropout in inference
        return report


def _covers_every_tensor(checked: LoadReport | None) -> bool:
    """Whether the checked checkpoint overwrites every tensor of the new adapter."""
    return checked is not None and not checked.missing and not checked.mismatched


def _load_state_dict(
    model: PeftModel, tensors: Mapping[str, Tensor], adapter_name: str, strict: bool, checked: LoadReport | None
) -> LoadReport:
    """Load ``tensors``; a load whose pre-check ran (``checked``) does not check them again."""
    if checked is None:
        return set_peft_model_state_dict(model, tensors, adapter_name, strict=strict)
    raise_or_warn(checked, adapter_name, strict)  # the non-strict warning; errors were raised already
    load_checked_state_dict(model, tensors, adapter_name, checked)
    return checked
