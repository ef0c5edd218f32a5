"""``PeftModel``: a model with named adapters, in the Hugging Face PEFT user API."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar, SupportsIndex

from torch import nn

from peft_core.api.activation_checkpointing import ActivationCheckpointing, is_checkpointing, require_input_grads
from peft_core.api.checkpointing import Checkpointing
from peft_core.api.model_hooks import ModelHooks
from peft_core.api.signature import reduce_signed, signed_class
from peft_core.api.status import TunerLayerStatus, TunerModelStatus, get_layer_status, get_model_status
from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import adapter_layers
from peft_core.engine import ModulesToSaveWrapper, TunedModel, adapter_rows, add_weighted_adapter, refuse_adapted
from peft_core.errors import AdapterNotFoundError, ConfigError, PeftError
from peft_core.io.loading import DEFAULT_ADAPTER


class PeftModel(Checkpointing, ActivationCheckpointing, nn.Module):
    """Wraps a model whose targeted modules carry adapters.

    Unknown attributes fall through to the wrapped model (``generate``, ``config``...).
    All adapters on one model belong to one method (tuner). ``base_model`` is the
    ``TunedModel`` holding the user's model as ``base_model.model``. Like Hugging Face
    PEFT, wrapping changes ``model`` in place: it is the model inside, adapters and all.
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
        refuse_adapted(model)
        self.__class__ = signed_class(getattr(type(self), "_unsigned_class", type(self)), type(model))
        self.base_model = TunedModel(model)
        self.autocast_adapter_dtype = autocast_adapter_dtype
        self._hooks = ModelHooks(self.base_model)
        self._add(adapter_name, peft_config, loading=low_cpu_mem_usage)
        if is_checkpointing(model):  # switched on before wrapping: adapters need input grads
            require_input_grads(model)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        if hasattr(type(self), "_signed_for"):  # the class that shows the wrapped model's signature
            return reduce_signed(self, int(protocol))
        return super().__reduce_ex__(protocol)

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

    @property
    def prefix(self) -> str:
        """The adapter parameters' name prefix of this model's method (LoRA: ``"lora_"``), as Hugging Face PEFT."""
        return self.base_model.prefix

    @property
    def active_peft_config(self) -> PeftConfig:
        """The stored config of the (first) active adapter."""
        return self.peft_config[self.active_adapters[0]]

    @property
    def targeted_module_names(self) -> list[str]:
        """Paths (in the user's model) of the modules that adapters wrap, modules_to_save excluded."""
        return [p for p, layer in adapter_layers(self.get_base_model()) if not isinstance(layer, ModulesToSaveWrapper)]

    @property
    def modules_to_save(self) -> set[str] | None:
        """The ``modules_to_save`` entries of every adapter (None when there are none)."""
        entries = {e for c in self.peft_config.values() for e in (getattr(c, "modules_to_save", None) or [])}
        return entries or None

    def add_adapter(
        self,
        adapter_name: str,
        peft_config: PeftConfig,
        low_cpu_mem_usage: bool = False,
        autocast_adapter_dtype: bool | None = None,
    ) -> None:
        """Add a new adapter (not made active unless it is the first one).

        ``low_cpu_mem_usage``: leave its tensors uninitialised (a load fills them next);
        ``autocast_adapter_dtype``: fp32 adapter tensors on a half-precision base (default:
        what the model was created with).
        """
        autocast = self.autocast_adapter_dtype if autocast_adapter_dtype is None else autocast_adapter_dtype
        self._add(adapter_name, peft_config, loading=low_cpu_mem_usage, autocast=autocast)

    def _add(self, adapter_name: str, peft_config: PeftConfig, loading: bool, autocast: bool | None = None) -> None:
        if adapter_name in self.peft_config:
            raise PeftError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
        peft_config = self._fit_task(peft_config)
        name = getattr(getattr(self.get_base_model(), "config", None), "name_or_path", None) or None
        given = peft_config.base_model_name_or_path
        if given is None:
            peft_config = peft_config.model_copy(update={"base_model_name_or_path": name})
        elif name is not None and given != name:
            warnings.warn(
                f"the config's base_model_name_or_path is {given!r} but the model was loaded from {name!r}; "
                "keeping yours (Hugging Face PEFT would replace it)",
                UserWarning,
                stacklevel=3,
            )
        autocast = self.autocast_adapter_dtype if autocast is None else autocast
        self.base_model.inject_adapter(peft_config, adapter_name, autocast, loading=loading)

    def set_adapter(self, adapter_name: str | Sequence[str], inference_mode: bool | None = None) -> None:
        """Make these adapters active.

        Trainability is left as it is by default. ``inference_mode=False`` is Hugging Face
        PEFT's behaviour: these adapters become trainable and every other one frozen;
        ``inference_mode=True`` freezes them.
        """
        self.base_model.set_adapter(adapter_name)
        if inference_mode is not None:
            names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
            others = [n for n in self.peft_config if n not in names]
            self.set_requires_grad(names, not inference_mode)
            if not inference_mode and others:
                self.set_requires_grad(others, False)

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        """Make these adapters' tensors trainable (or frozen); nothing else changes."""
        names = {adapter_names} if isinstance(adapter_names, str) else set(adapter_names)
        unknown = sorted(names - set(self.peft_config))
        if unknown:
            raise AdapterNotFoundError(f"unknown adapters {unknown}; this model has {list(self.peft_config)}")
        for name in names:
            for _, layer in adapter_layers(self.get_base_model()):
                for param in layer.adapter_parameters(name):
                    param.requires_grad_(requires_grad)
            if name in self.base_model.adapter_modules:
                self.base_model.adapter_modules[name].requires_grad_(requires_grad)

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
        combination_type: str | None = None,
        **options: Any,
    ) -> None:
        """Add ``adapter_name``: a weighted combination of ``adapters`` (not made active).

        The tuner does the math (LoRA: ``"svd"`` by default with ``svd_rank=``, ``"cat"``
        (exact), ``"linear"``, ``"ties"``, ``"dare_ties"``... with ``density=``; IA3: the
        weighted sum of its vectors); see docs/weighted-adapters.md for which is exact.
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

    def get_layer_status(self) -> list[TunerLayerStatus]:
        """The adapter state of each adapter layer (Hugging Face PEFT's ``TunerLayerStatus``)."""
        return get_layer_status(self)

    def get_model_status(self) -> TunerModelStatus:
        """The adapter state of the model (Hugging Face PEFT's ``TunerModelStatus``)."""
        return get_model_status(self)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, adapters included."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        share = 100 * trainable / total if total else 0.0
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}")
