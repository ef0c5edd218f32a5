"""``PeftModel``'s checkpoint methods, with Hugging Face PEFT's arguments.

``save_pretrained`` writes each adapter atomically in the Hugging Face PEFT layout (plus a
model card); ``from_pretrained`` and ``load_adapter`` check a checkpoint on a meta-device
copy of the model before touching it, and leave the model as it was when a load fails.
Adapters are read from local folders (no hub access).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.engine import TunedModel, refuse_adapted
from peft_core.errors import AdapterLoadError, AdapterSaveError, PeftError
from peft_core.io.checkpoint import adapter_subdir, read_adapter, read_tensors, write_adapter
from peft_core.io.embedding_layers import SaveEmbeddings, embedding_tensors, embeddings_from_state_dict
from peft_core.io.hf_compat import fit_loaded_config, map_checkpoint_keys
from peft_core.io.loading import (
    DEFAULT_ADAPTER,
    LoadReport,
    load_checked_state_dict,
    raise_or_warn,
    select_adapter_state_dict,
    set_peft_model_state_dict,
)
from peft_core.io.model_card import write_model_card
from peft_core.io.precheck import check_adapter_fits, describe_error

P = TypeVar("P", bound="Checkpointing")

# Hugging Face PEFT's hub arguments: meaningless for local folders, accepted and ignored with a warning.
HUB_ARGUMENTS = frozenset({"revision", "token", "use_auth_token", "cache_dir", "force_download", "local_files_only"})


def _ignored(kwargs: Mapping[str, Any], where: str) -> None:
    """One warning naming arguments that change nothing here (never a silent drop)."""
    if kwargs:
        warnings.warn(f"{where}: ignored arguments {sorted(kwargs)} (not used by peft-core)", UserWarning, stacklevel=3)


def load_peft_weights(model_id: str | os.PathLike[str], device: str | torch.device | None = None) -> dict[str, Tensor]:
    """The tensors of the adapter saved in folder ``model_id`` (keys as saved), on ``device``."""
    tensors = read_tensors(model_id)
    return tensors if device is None else {k: v.to(device) for k, v in tensors.items()}


def _source(model_id: str | os.PathLike[str], subfolder: str | None) -> Path:
    folder = Path(model_id) / subfolder if subfolder else Path(model_id)
    if not folder.is_dir():
        raise AdapterLoadError(
            f"{folder} is not a folder: adapters are loaded from local folders (peft-core does not download)"
        )
    return folder


class Checkpointing:
    """Saving and loading for ``PeftModel`` (a mixin: it uses the model's ``base_model``)."""

    base_model: TunedModel
    autocast_adapter_dtype: bool

    if TYPE_CHECKING:

        @property
        def peft_config(self) -> dict[str, PeftConfig]: ...

        def _add(self, adapter_name: str, peft_config: PeftConfig, loading: bool) -> None: ...
        @classmethod
        def _fit_task(cls, config: PeftConfig) -> PeftConfig: ...
        def delete_adapter(self, adapter_name: str) -> None: ...
        def get_base_model(self) -> nn.Module: ...
        def eval(self: P) -> P: ...

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        safe_serialization: bool = True,
        selected_adapters: Sequence[str] | None = None,
        save_embedding_layers: SaveEmbeddings = "auto",
        is_main_process: bool = True,
        state_dict: Mapping[str, Tensor] | None = None,
        path_initial_model_for_weight_conversion: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write each adapter (default: all) in the Hugging Face PEFT layout, atomically.

        Adapter ``default`` goes to ``save_directory``, others to ``save_directory/<name>``;
        a README.md model card is written unless the folder has one. As in Hugging Face
        PEFT (and as its Trainer calls it): ``state_dict`` is a full model state dict
        gathered by the caller to take the adapter tensors from; ``is_main_process=False``
        writes nothing; ``save_embedding_layers`` saves the embedding weights too (see
        ``peft_core.io.embedding_layers``). ``safe_serialization=False`` (a pickle file) is
        refused. ``path_initial_model_for_weight_conversion``: the adapter as saved before
        training, for initialisations that rewrote the base weights (LoRA's PiSSA/OLoRA); it
        is then written as a change of the original base model (the tuner's
        ``relative_to_initial``). Sharded models: ``peft_core.integrations.distributed.save_pretrained``.
        """
        if not safe_serialization:
            raise AdapterSaveError(
                "safe_serialization=False asks for a pickled adapter_model.bin, which peft-core never writes (a "
                "pickle runs code when loaded); keep safe_serialization=True: every tool reads the .safetensors file"
            )
        _ignored({k: v for k, v in kwargs.items() if k not in HUB_ARGUMENTS}, "save_pretrained")
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise PeftError(f"cannot save unknown adapters {unknown}; this model has {list(self.peft_config)}")
        if not is_main_process:
            return
        for name in names:
            picked = None if state_dict is None else select_adapter_state_dict(cast(nn.Module, self), state_dict, name)
            tensors = self.base_model.tensors_to_save(name, picked)
            config = self.peft_config[name]
            if path_initial_model_for_weight_conversion is not None:
                initial_config, initial_tensors = read_adapter(path_initial_model_for_weight_conversion)
                config, tensors = self.base_model.tuner.relative_to_initial(
                    self.base_model, name, tensors, initial_config, initial_tensors
                )
            embeddings = embedding_tensors(self.base_model.model, config, save_embedding_layers)
            if state_dict is not None:  # the live weights may be shards: take the gathered ones
                embeddings = embeddings_from_state_dict(embeddings, state_dict)
            tensors.update(embeddings)
            write_adapter(adapter_subdir(save_directory, name), config, tensors)
        task = next(iter(self.peft_config.values())).task_type
        write_model_card(save_directory, {n: self.peft_config[n] for n in names}, _PIPELINES.get(str(task)))

    @classmethod
    def from_pretrained(
        cls: type[P],
        model: nn.Module,
        model_id: str | os.PathLike[str],
        adapter_name: str = DEFAULT_ADAPTER,
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        key_mapping: Mapping[str, str] | None = None,
        strict: bool = True,
        torch_device: str | None = None,
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> P:
        """Wrap ``model`` and load the adapter saved in folder ``model_id`` (``/subfolder``).

        ``config`` replaces the folder's adapter_config.json; ``key_mapping`` (regex ->
        replacement) renames checkpoint keys saved for an older layout of the model
        (transformers' own renamings apply by default); ``low_cpu_mem_usage`` and
        ``torch_device`` are accepted for compatibility: adapter tensors are never
        initialised when the checkpoint fills them, and always go where the base weights
        are. The result is of the task-type class of the saved ``task_type``
        (``PeftModelForCausalLM``...) whichever class this is called on, as in Hugging Face
        PEFT; without a saved task type, of this class (whose task the adapter then gets).
        A load that fails raises ``AdapterLoadError`` and leaves ``model`` as it was.
        """
        _ignored({k: v for k, v in kwargs.items() if k not in HUB_ARGUMENTS | {"device_map"}}, "from_pretrained")
        refuse_adapted(model)
        found, tensors = _read(model_id, subfolder, config)
        tensors = map_checkpoint_keys(model, tensors, key_mapping)
        # As Hugging Face PEFT: the class of the saved task type, whichever class this is called on.
        make: Any = getattr(cls, "task_models", {}).get(str(found.task_type), cls)
        found = make._fit_task(fit_loaded_config(found, model)).model_copy(update={"inference_mode": not is_trainable})
        checked = check_adapter_fits(model, found, tensors, adapter_name, strict, model_id, autocast_adapter_dtype)
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            # PeftModel or a task-type subclass: (model, config, name, autocast, low_cpu_mem_usage)
            peft_model: P = make(model, found, adapter_name, autocast_adapter_dtype, _covers_every_tensor(checked))
        except Exception as exc:  # injection rolled itself back; any failure of it is a load error here
            raise AdapterLoadError(f"adapter in {model_id} does not fit this model: {describe_error(exc)}") from exc
        try:
            _load_state_dict(peft_model.base_model, tensors, adapter_name, strict, checked)
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
        torch_device: str | None = None,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        key_mapping: Mapping[str, str] | None = None,
        strict: bool = True,
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> LoadReport:
        """Add the adapter saved in ``model_id`` as ``adapter_name`` (not made active).

        Returns the load report (``missing_keys``, ``unexpected_keys``: empty unless
        ``strict=False``). Arguments as in ``from_pretrained``.
        """
        _ignored({k: v for k, v in kwargs.items() if k not in HUB_ARGUMENTS}, "load_adapter")
        config, tensors = _read(model_id, subfolder, None)
        tensors = map_checkpoint_keys(self.get_base_model(), tensors, key_mapping)
        config = self._fit_task(fit_loaded_config(config, self.get_base_model())).model_copy(
            update={"inference_mode": not is_trainable}
        )
        if adapter_name in self.peft_config:
            raise AdapterLoadError(f"adapter {adapter_name!r} already exists; delete_adapter() it or pick another name")
        checked = check_adapter_fits(
            self.get_base_model(), config, tensors, adapter_name, strict, model_id, autocast_adapter_dtype
        )
        try:
            self._add(adapter_name, config, loading=_covers_every_tensor(checked))
        except Exception as exc:  # injection rolled itself back
            raise AdapterLoadError(f"adapter in {model_id} does not fit this model: {describe_error(exc)}") from exc
        try:
            report = _load_state_dict(self.base_model, tensors, adapter_name, strict, checked)
        except BaseException:
            self.delete_adapter(adapter_name)
            raise
        if not is_trainable:
            self.eval()  # as Hugging Face PEFT: no adapter dropout in inference
        return report


# Hugging Face pipeline tags the model card gets by task type.
_PIPELINES = {"CAUSAL_LM": "text-generation", "SEQ_2_SEQ_LM": "text2text-generation", "SEQ_CLS": "text-classification"}


def _read(
    model_id: str | os.PathLike[str], subfolder: str | None, config: PeftConfig | None
) -> tuple[PeftConfig, dict[str, Tensor]]:
    folder = _source(model_id, subfolder)
    if config is None:
        return read_adapter(folder)
    return config.model_copy(deep=True), read_tensors(folder)


def _covers_every_tensor(checked: LoadReport | None) -> bool:
    """Whether the checked checkpoint overwrites every tensor of the new adapter."""
    return checked is not None and not checked.missing and not checked.mismatched


def _load_state_dict(
    model: nn.Module,
    tensors: Mapping[str, Tensor],
    adapter_name: str,
    strict: bool,
    checked: LoadReport | None,
) -> LoadReport:
    """Load ``tensors``; a load whose pre-check ran (``checked``) does not check them again."""
    if checked is None:
        return set_peft_model_state_dict(model, tensors, adapter_name, strict=strict)
    raise_or_warn(checked, adapter_name, strict)  # the non-strict warning; errors were raised already
    load_checked_state_dict(model, tensors, adapter_name, checked)
    return checked
