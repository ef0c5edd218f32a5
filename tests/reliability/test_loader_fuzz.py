"""Fuzzing the checkpoint loader: mutated adapter_config.json and safetensors bytes.

Whatever the files hold, loading either works or raises a ``PeftError`` (nothing else
escapes), and a load that raises leaves the model bit-identical (module tree, tensors,
flags, outputs), for ``from_pretrained`` and for ``load_adapter`` alike.
"""

from __future__ import annotations

import copy
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save
from torch import nn

from peft_core import PeftError, PeftModel
from reliability.common import PROPERTIES, Snapshot, X, lora_mlp
from reliability.test_config_properties import json_values

FUZZ = settings(PROPERTIES, max_examples=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, bytes, bytes]:
    """A base model and the two files of an adapter saved for it."""
    base, model = lora_mlp(target_modules=["emb", "lin0"], modules_to_save=["head"])
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    return (
        base,
        (directory / "adapter_config.json").read_bytes(),
        (directory / "adapter_model.safetensors").read_bytes(),
    )


def _load_both_ways(base: nn.Module, directory: Path) -> None:
    """from_pretrained into a fresh copy, and load_adapter next to an existing adapter."""
    target = copy.deepcopy(base)
    before = Snapshot.of(target, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            PeftModel.from_pretrained(target, directory)
        except PeftError:
            before.assert_same(Snapshot.of(target, X))
        _, holder = lora_mlp(target_modules=["lin1"])
        before = Snapshot.of(holder, X)
        try:
            holder.load_adapter(directory, "fuzzed")
        except PeftError:
            before.assert_same(Snapshot.of(holder, X))
            assert list(holder.peft_config) == ["default"]


def _flip(data: bytes, positions: list[int], values: list[int]) -> bytes:
    mutable = bytearray(data)
    for position, value in zip(positions, values, strict=False):
        mutable[position % len(mutable)] ^= value or 1
    return bytes(mutable)


byte_edits = st.tuples(st.lists(st.integers(0, 2**20), min_size=1, max_size=8), st.lists(st.integers(0, 255)))


@FUZZ
@given(st.data())
def test_mutated_config_json(saved: tuple[nn.Module, bytes, bytes], tmp_path_factory: Any, data: st.DataObject) -> None:
    base, config_bytes, weights = saved
    kind = data.draw(st.sampled_from(["value", "delete", "bytes", "truncate", "nesting"]), label="kind")
    config = json.loads(config_bytes)
    if kind == "value":
        key = data.draw(st.sampled_from([*config, "new_key"]), label="key")
        config[key] = data.draw(json_values, label="value")
        text = json.dumps(config).encode()
    elif kind == "delete":
        config.pop(data.draw(st.sampled_from(sorted(config)), label="key"))
        text = json.dumps(config).encode()
    elif kind == "bytes":
        text = _flip(config_bytes, *data.draw(byte_edits, label="flips"))
    elif kind == "truncate":
        text = config_bytes[: data.draw(st.integers(0, len(config_bytes) - 1), label="length")]
    else:
        depth = data.draw(st.integers(100, 100_000), label="depth")
        text = ('{"target_modules": ' + "[" * depth + "]" * depth + "}").encode()
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "adapter_config.json").write_bytes(text)
    (directory / "adapter_model.safetensors").write_bytes(weights)
    _load_both_ways(base, directory)


def _header(weights: bytes) -> tuple[dict[str, Any], bytes]:
    (size,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8 : 8 + size]), weights[8 + size :]


def _with_header(header: dict[str, Any], body: bytes, size: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if size is None else size) + text + body


DTYPES = ["F16", "BF16", "F32", "F64", "I64", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "XYZ"]
dims = st.integers(-2, 2**40) | st.integers(0, 64)
TORCH_DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int64, torch.bool, torch.float8_e4m3fn]
SPECIAL = [float("nan"), float("inf"), -float("inf"), 1e38, 1e300, 0.0, -0.0, 5e-324]


def _retyped(tensors: dict[str, torch.Tensor], data: st.DataObject) -> bytes:
    """A well-formed file whose tensors are of other dtypes, shapes or values, or renamed."""
    key = data.draw(st.sampled_from(sorted(tensors)), label="tensor")
    change = data.draw(st.sampled_from(["dtype", "shape", "special", "rename", "drop", "add"]), label="change")
    tensor = tensors[key]
    if change == "dtype":
        tensors[key] = tensor.to(data.draw(st.sampled_from(TORCH_DTYPES), label="to"))
    elif change == "shape":
        shape = data.draw(st.lists(st.integers(0, 20), max_size=3), label="shape")
        tensors[key] = torch.ones(shape)
    elif change == "special":
        value = data.draw(st.sampled_from(SPECIAL), label="value")
        tensors[key] = tensor.double().flatten().index_fill(0, torch.tensor([0]), value).view(tensor.shape)
    elif change == "rename":
        tensors[key.replace("lin0", data.draw(st.sampled_from(["lin1", "lin00", "head", ""]), label="to"))] = (
            tensors.pop(key)
        )
    elif change == "drop":
        tensors.pop(key)
    else:
        tensors[data.draw(st.text(max_size=30), label="new key")] = tensor.clone()
    return save(tensors)


@FUZZ
@given(st.data())
def test_mutated_safetensors(saved: tuple[nn.Module, bytes, bytes], tmp_path_factory: Any, data: st.DataObject) -> None:
    base, config_bytes, weights = saved
    header, body = _header(weights)
    names = sorted(k for k in header if k != "__metadata__")
    kinds = ["tensors", "tensors", "bytes", "truncate", "size", "dtype", "shape", "offsets", "value"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "tensors":
        mutated = _retyped(load(weights), data)
    elif kind == "bytes":
        mutated = _flip(weights, *data.draw(byte_edits, label="flips"))
    elif kind == "truncate":
        mutated = weights[: data.draw(st.integers(0, len(weights) - 1), label="length")]
    elif kind == "size":  # the header's length prefix lies
        mutated = _with_header(header, body, data.draw(st.integers(0, 2**64 - 1), label="size"))
    else:
        entry = header[data.draw(st.sampled_from(names), label="tensor")]
        if kind == "dtype":
            entry["dtype"] = data.draw(st.sampled_from(DTYPES), label="dtype")
        elif kind == "shape":
            entry["shape"] = data.draw(st.lists(dims, max_size=4), label="shape")
        elif kind == "offsets":
            entry["data_offsets"] = data.draw(st.lists(dims, min_size=2, max_size=2), label="offsets")
        else:
            key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]), label="key")
            entry[key] = data.draw(json_values, label="value")
        mutated = _with_header(header, body)
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "adapter_config.json").write_bytes(config_bytes)
    (directory / "adapter_model.safetensors").write_bytes(mutated)
    _load_both_ways(base, directory)
