"""The tensors of a TorchScript archive (OpenAI's CLIP files), read without running any of its code.

``torch.jit.load`` compiles the archive's code and runs the ``__setstate__`` methods the archive defines, so it runs
code that comes with the file. :func:`read_tensors` reads the same parameters and buffers another way: it unpickles
the archive's ``data.pkl`` with an allow-list (TorchScript objects as plain records, tensors, storages, the containers
TorchScript writes) and takes from each object the parameters and buffers its class declares in the archive's code
files, which are read as text, never run. A class without declarations (none are missing in archives of current
PyTorch versions) gives every tensor attribute, which is what a traced module holds.

An archive that cannot be read that way raises :class:`CodeRequiredError`, naming what needs code: a Python global
outside the allow-list, or a class that restores itself with its own ``__setstate__``.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from omlcore.errors import OmlcoreError

__all__ = ["CodeRequiredError", "read_tensors"]

_STORAGE_DTYPES = {
    "Float": torch.float32,
    "Half": torch.float16,
    "BFloat16": torch.bfloat16,
    "Double": torch.float64,
    "ComplexFloat": torch.complex64,
    "ComplexDouble": torch.complex128,
    "Long": torch.int64,
    "Int": torch.int32,
    "Short": torch.int16,
    "Char": torch.int8,
    "Byte": torch.uint8,
    "Bool": torch.bool,
}
_LIST_TAGS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")
_CLASS_START = re.compile(r"^(?=class )", re.M)


class CodeRequiredError(OmlcoreError, pickle.UnpicklingError):
    """The archive holds something that only its code (``torch.jit.load``) or full unpickling could rebuild."""


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> Tensor:
    return torch.as_strided(storage, size, stride, offset)


def _untagged(value: Any, *_: Any) -> Any:
    return value


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch.jit._pickle", name): _untagged for name in _LIST_TAGS},
    **{("torch", f"{name}Storage"): dtype for name, dtype in _STORAGE_DTYPES.items()},
}


class _ScriptObject:
    """An object of a TorchScript class as ``data.pkl`` describes it: its attributes, none of its code."""

    qualified_name = ""
    attributes: MappingProxyType[str, Any] = MappingProxyType({})

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CodeRequiredError(
                f"the TorchScript class {self.qualified_name} restores itself with its own code (__setstate__)"
            )
        self.attributes = MappingProxyType(state)


@dataclass(frozen=True)
class _Declaration:
    """What a class of the archive's code declares: its parameters and buffers, and whether it has ``__setstate__``."""

    tensors: tuple[str, ...] | None
    restores_itself: bool


def _declarations(code: str) -> dict[str, _Declaration]:
    """``class name -> declaration`` for the classes of one code file of the archive (parsed, not run)."""
    found = {}
    for block in _CLASS_START.split(code):
        header = re.match(r"class (\w+)", block)
        if header is None:
            continue
        lists = [re.search(rf"^  {name} = (\[.*\])$", block, re.M) for name in ("__parameters__", "__buffers__")]
        names = [ast.literal_eval(match.group(1)) for match in lists if match is not None]
        declared = len(names) == 2 and all(isinstance(n, str) for listed in names for n in listed)
        found[header.group(1)] = _Declaration(
            tuple(names[0] + names[1]) if declared else None,
            re.search(r"^  def __setstate__\(", block, re.M) is not None,
        )
    return found


class _Reader(pickle.Unpickler):
    """Unpickles ``<root>/data.pkl`` of a TorchScript archive with an allow-list; storages come from its records."""

    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self._archive = archive
        self._root = root
        self._storages: dict[str, Tensor] = {}
        self._classes: dict[str, type[_ScriptObject]] = {}
        self._code: dict[str, dict[str, _Declaration]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self._classes[qualified]
        if (module, name) not in _ALLOWED:
            raise CodeRequiredError(f"it refers to the Python global {module}.{name}")
        return _ALLOWED[module, name]

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise ValueError(f"unknown persistent id {pid!r:.100} in data.pkl")
        _, dtype, key, _, numel = pid
        if key not in self._storages:
            data = bytearray(self._archive.read(f"{self._root}/data/{key}"))
            if len(data) != numel * dtype.itemsize:
                raise ValueError(
                    f"storage {key} holds {len(data)} bytes, {numel} x {dtype} needs {numel * dtype.itemsize}"
                )
            self._storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return self._storages[key]

    def declaration(self, qualified_name: str) -> _Declaration | None:
        """What the archive's code declares for ``qualified_name`` (``__torch__.<module path>.<class>``)."""
        module, _, name = qualified_name.rpartition(".")
        if module not in self._code:
            record = f"{self._root}/code/{module.replace('.', '/')}.py"
            names = set(self._archive.namelist())
            self._code[module] = _declarations(self._archive.read(record).decode()) if record in names else {}
        return self._code[module].get(name)

    def tensors(self, obj: _ScriptObject, prefix: str, into: dict[str, Tensor]) -> dict[str, Tensor]:
        """The parameters and buffers of ``obj`` and its child objects, keyed as ``state_dict()`` keys them."""
        declared = self.declaration(obj.qualified_name)
        if declared is not None and declared.restores_itself:
            raise CodeRequiredError(
                f"the TorchScript class {obj.qualified_name} restores itself with its own code (__setstate__)"
            )
        own = declared.tensors if declared is not None and declared.tensors is not None else obj.attributes
        for name in own:
            value = obj.attributes.get(name)
            if isinstance(value, Tensor):
                into[prefix + name] = value
        for name, value in obj.attributes.items():
            if isinstance(value, _ScriptObject):
                self.tensors(value, f"{prefix}{name}.", into)
        return into


def read_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The parameters and buffers of the TorchScript archive at ``path``, as ``torch.jit.load(path).state_dict()``
    gives them (keys, order, dtypes, values), on the CPU, without running any of the archive's code.

    Raises:
        CodeRequiredError: the archive holds something that only running its code could rebuild.
        ValueError, KeyError, zipfile.BadZipFile: the file is not a readable TorchScript archive.
    """
    with zipfile.ZipFile(path) as archive:
        roots = [name[: -len("/data.pkl")] for name in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", name)]
        if len(roots) != 1:
            raise ValueError(f"expected one <archive>/data.pkl record, found {len(roots)}")
        reader = _Reader(archive, roots[0])
        module = reader.load()
        if not isinstance(module, _ScriptObject):
            raise ValueError(f"data.pkl holds a {type(module).__name__}, not a TorchScript module")
        return reader.tensors(module, "", {})
