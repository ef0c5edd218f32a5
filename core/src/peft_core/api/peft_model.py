"""``PeftModel``: a model with named adapters, in the Hugging Face PEFT user API."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

from torch import Tensor, nn

from peft_core.api.activation_checkpointing import ActivationCheckpointing, is_checkpointing, require_input_grads
from peft_core.api.model_hooks import ModelHooks
from peft_core.contract.config import PeftConfig
from peft_core.engine import TunedModel, adapter_rows, add_weighted_adapter
from peft_core.errors import AdapterLoadError, ConfigError, PeftError
from peft_core.io.checkpoint import adapter_subdir, read_adapter, write_adapter
from peft_core.io.hf_compat import fit_loaded_config
from peft_core.io.loading import (
    DEFAULT_ADAPTER,
    LoadReport,
    load_checked_state_dict,
    raise_or_warn,
    select_adapter_state_dict,
    set_peft_model_state_dict,
)
from peft_core.io.precheck import check_adapter_fits, describe_error


class PeftModel(ActivationCheckpointing, nn.Module):
    """Wraps a model whose targeted modules carry adapters.

    Unknown attributes fall through to the wrapped model (``generate``, ``config``...).
    All adapters on one model belong to one method (tuner). ``base_model`` is the
    ``TunedModel`` holding the user's model as ``base_model.model``.
    """

    #: The task-type subclasses (``PeftModelForCausalLM``...) by ``task_type``, registered by
    #: ``class C(PeftModel, task_type="CAUSAL_LM")``; ``from_pretrained`` picks one as Hugging Face PEFT does.
    task_models: ClassVar[dict[str, type[PeftModel]]] = {}
    #: The task of a task-type subclass: its adapters' configs get it when they have none.
    task_type: ClassVar[str | None] = None

    def __init_subclass__(cls, task_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if task_type is not None:
            cls.task_type = task_type
            PeftModel.task_models[task_type] = cls

    @classmethod
    def _fit_task(cls, config: PeftConfig) -> PeftConfig:
        """``config`` with this class's ``task_type`` (a copy if it had none); an error if it has another."""
        if cls.task_type is None or config.task_type == cls.task_type:
            return config
        if config.task_type is None:
            return config.model_copy(update={"task_type": cls.task_type})
        raise ConfigError(
            f"{cls.__name__} runs task_type {cls.task_type!r}, but the adapter's config has task_type "
            f"{config.task_type!r}; use get_peft_model (it picks the class from the task type) or the matching class"
        )

    def __init__(
        self,
        model: nn.Module,
        peft_config: PeftConfig,
        adapter_name: str = DEFAULT_ADAPTER,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
    ) -> None:
        """``low_cpu_mem_usage``: the adapter's tensors are not initialised (a load fills them)."""
        super().__init__()
        self.base_model = TunedModel(model)
        self.autocast_adapter_dtype = autocast_adapter_dtype
        self._hooks = ModelHooks(self.base_model)
        self._add(adapter_name, peft_config, loading=low_cpu_mem_usage)
        if is_checkpointing(model):  # switched on before wrapping: adapters need input grads
            require_input_grads(model)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_modules") or name.startswith("__"):
                raise
            return getattr(self.base_model.model, name)

    # --- running ---

    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The wrapped model's forward; ``adapter_names`` picks an adapter per batch row.

        The tuner's model-level hooks run around it: ``prepare_inputs`` before,
        ``adapter_loss`` added to ``outputs.loss`` after.
        """
        with self._rows(adapter_names):
            return self._hooks.forward(args, kwargs)

    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The wrapped model's ``generate``: the tuner's ``prepare_generate`` changes its arguments,
        and its ``prepare_generation_inputs`` runs in each step."""
        with ExitStack() as stack:
            stack.enter_context(self._rows(adapter_names))
            args, kwargs = self._hooks.generate_arguments(args, kwargs)
            stack.enter_context(self._hooks.generation())
            return self.get_base_model().generate(*args, **kwargs)  # type: ignore[operator]

    def _rows(self, adapter_names: Sequence[str] | None) -> Any:
        if adapter_names is None:
            return ExitStack()
        self._hooks.check_per_row()
        return adapter_rows(self.get_base_model(), adapter_names)

    def update_and_allocate(self, global_step: int) -> None:
        """Call after each optimizer step: the tuner's ``on_step_end`` (AdaLoRA allocates ranks)."""
        self._hooks.on_step_end(global_step)

    # --- adapters ---

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        """The stored config of every adapter, by name."""
        return self.base_model.peft_config

    @property
    def active_adapters(self) -> list[str]:
        return self.base_model.active_adapters

    @property
    def active_adapter(self) -> str | list[str]:
        return self.base_model.active_adapter

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig) -> None:
        """Add a new adapter (not made active unless it is the first one)."""
        self._add(adapter_name, peft_config, loading=False)

    def _add(self, adapter_name: str, peft_config: PeftConfig, loading: bool) -> None:
        if adapter_name in self.peft_config:
            raise PeftError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        peft_config = self._fit_task(peft_config)
        if peft_config.base_model_name_or_path is None:
            name = getattr(getattr(self.get_base_model(), "config", None), "name_or_path", None)
            peft_config = peft_config.model_copy(update={"base_model_name_or_path": name or None})
        self.base_model.inject_adapter(peft_config, adapter_name, self.autocast_adapter_dtype, loading=loading)

    def set_adapter(self, adapter_name: str | Sequence[str]) -> None:
        """Make these adapters active (trainability is not changed)."""
        self.base_model.set_adapter(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; if it was the only active one, the first remaining becomes active."""
        self.base_model.delete_adapter(adapter_name)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Inside the block the model computes its base outputs; nothing else changes."""
        with self.base_model.disabled_adapters():
            yield

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
        add_weighted_adapter(
            self.base_model,
            adapters,
            weights,
            adapter_name,
            combination_type,
            autocast_adapter_dtype=self.autocast_adapter_dtype,
            **options,
        )

    # --- merging ---

    def merge_adapter(
        self, adapter_names: Sequence[str] | None = None, safe_merge: bool = False, exact_unmerge: bool = True
    ) -> None:
        """Fold adapters (default: the active ones) into the base weights, all layers or none.

        ``exact_unmerge`` keeps (in CPU memory) what lets ``unmerge_adapter`` restore the
        base weights bit for bit; docs/reliability.md gives the cost and the tolerance without.
        """
        self.base_model.merge_adapter(adapter_names, safe_merge, exact_unmerge)

    def unmerge_adapter(self) -> None:
        """Take merged adapters out of the base weights."""
        self.base_model.unmerge_adapter()

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> nn.Module:
        """Merge, then return the plain base model without adapter layers."""
        return self.base_model.unload_adapters(merge=True, adapter_names=adapter_names, safe=safe_merge)

    def unload(self) -> nn.Module:
        """Return the base model with adapter layers removed and original weights."""
        return self.base_model.unload_adapters(merge=False)

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
        Sharded models: see ``peft_core.integrations.distributed.save_pretrained``.
        """
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise PeftError(f"cannot save unknown adapters {unknown}; this model has {list(self.peft_config)}")
        if not is_main_process:
            return
        for name in names:
            if state_dict is None:
                tensors = self.base_model.tensors_to_save(name)
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

        The result is the task-type class of the saved ``task_type`` (``PeftModelForCausalLM``...),
        whichever class this is called on, as in Hugging Face PEFT; without a saved task type,
        this class (whose task, if any, the adapter gets).

        A load that fails raises ``AdapterLoadError`` and leaves ``model`` as it was.
        """
        config, tensors = read_adapter(model_id)
        model_class = PeftModel.task_models.get(str(config.task_type), cls)
        config = model_class._fit_task(fit_loaded_config(config, model))
        config = config.model_copy(update={"inference_mode": not is_trainable})
        checked = check_adapter_fits(model, config, tensors, adapter_name, strict, model_id, autocast_adapter_dtype)
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            peft_model = model_class(model, config, adapter_name, autocast_adapter_dtype, _covers_every_tensor(checked))
        except Exception as exc:  # injection rolled itself back; any failure of it is a load error here
            raise AdapterLoadError(f"adapter in {model_id} does not fit this model: {describe_error(exc)}") from exc
        try:
            _load_state_dict(peft_model, tensors, adapter_name, strict, checked)
        except BaseException:
            peft_model.base_model.unload_adapters(merge=False)
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
        config = self._fit_task(fit_loaded_config(config, self.get_base_model())).model_copy(
            update={"inference_mode": not is_trainable}
        )
        if adapter_name in self.peft_config:
            raise AdapterLoadError(f"adapter {adapter_name!r} already exists; delete_adapter() it or pick another name")
        checked = check_adapter_fits(
            self.get_base_model(), config, tensors, adapter_name, strict, model_id, self.autocast_adapter_dtype
        )
        try:
            self._add(adapter_name, config, loading=_covers_every_tensor(checked))
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
