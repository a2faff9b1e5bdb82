"""Read fairseq `.pt` checkpoints and small pickles without running any code from the file.

A pickle is a program: every `GLOBAL` it names is imported and may be called. `RestrictedUnpickler` resolves
globals from an explicit table only, and every entry of that table is either a plain data constructor
(dict, OrderedDict, list, int, ...) or a stand-in of ours that only records data:

- `argparse.Namespace` -> `Namespace` record (turned into a dict by `to_plain`);
- any `omegaconf.*` class (DictConfig, ListConfig, nodes, metadata) -> `OmegaRecord`, whose recorded state
  `to_plain` walks to plain dicts and lists; omegaconf itself is never imported;
- fairseq's `ChoiceEnum` members (`fairseq.dataclass.constants.*`) -> their string value;
- `torch._utils._rebuild_tensor_v2` and the `torch.*Storage` types -> `LazyTensor`, a description of a tensor
  whose bytes stay in the zip archive until `materialize()` is called. Optimizer state is therefore never
  read from disk unless asked for: importing a B checkpoint costs the weights that are kept, not the file.

Any other global (`os.system`, `builtins.eval`, a fairseq class, ...) raises `UnsafePickleError` naming it,
before anything is called. Only torch's zip format (torch >= 1.6) is read; the legacy format is refused.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import pickle
import zipfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allow-list; nothing in it was executed."""


# --------------------------------------------------------------------------------------------------
# Stand-ins: record data, run nothing
# --------------------------------------------------------------------------------------------------


class Namespace:
    """Stand-in for `argparse.Namespace`: keeps its attributes as a dict."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


class OmegaRecord:
    """Stand-in for every omegaconf class: remembers its class name, constructor args and pickled state."""

    omega_class = "omegaconf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _omega_class(name: str) -> type[OmegaRecord]:
    return type(name, (OmegaRecord,), {"omega_class": name})


class _ChoiceEnum:
    """Stand-in for a fairseq `ChoiceEnum` class: `Enum(value)` gives back the plain value."""

    def __new__(cls, value: Any = None) -> Any:
        return value


_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass
class LazyTensor:
    """A tensor described by the checkpoint, read from the archive only when `materialize()` is called."""

    archive: _Archive
    key: str
    dtype: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def materialize(self):
        """The tensor itself, read from its storage alone (the archive's other storages are not read).

        A tensor that is its whole storage, contiguous (every tensor of a state dict) wraps the bytes read,
        without a further copy."""
        import torch

        dtype = getattr(torch, self.dtype)
        storage = self.archive.read_storage(self.key)
        flat = torch.frombuffer(storage, dtype=dtype) if len(storage) else torch.empty(0, dtype=dtype)
        numel = 1
        for dim in self.size:
            numel *= dim
        if self.offset == 0 and flat.numel() == numel and self.stride == _contiguous_strides(self.size):
            return flat.view(self.size)
        return torch.as_strided(flat, self.size, self.stride, self.offset).clone()

    def same_view(self, other: LazyTensor) -> bool:
        """Same dtype, offset, shape and strides (the same storage, or storages to compare byte for byte)."""
        return (self.dtype, self.offset, self.size, self.stride) == (
            other.dtype,
            other.offset,
            other.size,
            other.stride,
        )

    def equals(self, other: LazyTensor) -> bool:
        """Whether both hold the same values, comparing storages by streamed hashes (no tensor in memory)."""
        if not self.same_view(other):
            import torch

            return torch.equal(self.materialize(), other.materialize())
        if self.archive is other.archive and self.key == other.key:
            return True  # fairseq saves its tied embeddings as one storage
        return self.archive.storage_digest(self.key) == other.archive.storage_digest(other.key)


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _rebuild_tensor(storage: tuple[_StorageType, str, Any], offset: int, size, stride, *_rest: Any):
    storage_type, key, archive = storage
    return LazyTensor(archive, key, storage_type.dtype, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if dtype.hasobject:
        raise UnsafePickleError("refused global numpy scalar of dtype object")
    return np.frombuffer(data or b"", dtype=dtype)[0].item()


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    return text.encode(encoding)  # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')


# (module, name) -> what the pickle gets instead. Everything here builds data; nothing runs code.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", name): obj
    for name, obj in {
        "dict": dict,
        "list": list,
        "tuple": tuple,
        "set": set,
        "frozenset": frozenset,
        "int": int,
        "float": float,
        "bool": bool,
        "str": str,
        "bytes": bytes,
        "bytearray": bytearray,
        "complex": complex,
        "slice": slice,
        "object": object,
    }.items()
}
_SAFE_GLOBALS.update(
    {
        ("collections", "OrderedDict"): OrderedDict,
        ("collections", "defaultdict"): defaultdict,
        ("_codecs", "encode"): _codecs_encode,
        ("argparse", "Namespace"): Namespace,
        ("typing", "Any"): "typing.Any",
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch", "Size"): tuple,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    }
)
_SAFE_GLOBALS.update({("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})


def allowed_global(module: str, name: str) -> Any:
    """The stand-in for `module.name`, or UnsafePickleError naming it."""
    if (module, name) in _SAFE_GLOBALS:
        return _SAFE_GLOBALS[(module, name)]
    if module == "omegaconf" or module.startswith("omegaconf."):
        return _omega_class(name)
    if module == "fairseq.dataclass.constants":
        return _ChoiceEnum
    raise UnsafePickleError(
        f"refused to load global '{module}.{name}': it is not a tensor, plain container or config record, "
        "and unpickling it could run code. Nothing from the file was executed."
    )


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals come from the allow-list only (see the module docstring)."""

    def __init__(self, file: Any, *, archive: _Archive | None = None) -> None:
        super().__init__(file)
        self._archive = archive

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 spells Python 3 names the Python 2 way (`__builtin__.dict`); map them back first.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return allowed_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        # torch's zip format: ('storage', storage_type, key, location, numel)
        if self._archive is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"unexpected persistent id {pid!r} in a plain pickle")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r}")
        return (storage_type, str(pid[2]), self._archive)


# --------------------------------------------------------------------------------------------------
# torch's zip archive
# --------------------------------------------------------------------------------------------------


@dataclass
class _Archive:
    """An open torch zip checkpoint: `<prefix>/data.pkl` plus one `<prefix>/data/<key>` entry per storage."""

    path: Path
    zip: zipfile.ZipFile = field(repr=False)
    prefix: str = ""

    def read_storage(self, key: str) -> bytearray:
        """One storage's bytes, read straight into one buffer (torch stores them uncompressed)."""
        name = f"{self.prefix}data/{key}"
        buffer = bytearray(self.zip.getinfo(name).file_size)
        with self.zip.open(name) as f:
            view, filled = memoryview(buffer), 0
            while filled < len(buffer):
                got = f.readinto(view[filled:])
                if not got:
                    raise UnsafePickleError(f"{self.path}: storage {key} is truncated")
                filled += got
        return buffer

    def storage_digest(self, key: str) -> str:
        """sha256 of one storage's bytes, streamed in 1 MiB blocks."""
        digest = hashlib.sha256()
        with self.zip.open(f"{self.prefix}data/{key}") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def load_torch_checkpoint(path: str | Path) -> Any:
    """A torch.save file -> plain Python data with `LazyTensor` leaves; refuses unsafe content."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path} is not a torch zip checkpoint (torch >= 1.6 format); the legacy format is not read"
        )
    archive_zip = zipfile.ZipFile(path)
    pickles = [n for n in archive_zip.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise UnsafePickleError(f"{path} has {len(pickles)} data.pkl records, expected exactly one")
    prefix = pickles[0][: -len("data.pkl")]
    archive = _Archive(path, archive_zip, prefix)
    with archive_zip.open(pickles[0]) as f:
        data = RestrictedUnpickler(io.BytesIO(f.read()), archive=archive).load()
    return to_plain(data)


def load_plain_pickle(path: str | Path) -> Any:
    """A small plain pickle (e.g. BiomedGPT's `trainval_ans2label.pkl`) -> plain data; refuses unsafe content."""
    with open(path, "rb") as f:
        return to_plain(RestrictedUnpickler(f).load())


# --------------------------------------------------------------------------------------------------
# Records -> plain data
# --------------------------------------------------------------------------------------------------


def _omega_value(record: OmegaRecord) -> Any:
    state = record.state
    if isinstance(state, dict):
        # DictConfig / ListConfig keep their children in `_content`; value nodes keep theirs in `_val`.
        if "_content" in state:
            content = state["_content"]
            if content is None or isinstance(content, str):  # None / "???" (missing) / interpolation
                return None if content in (None, "???") else content
            return to_plain(content)
        if "_val" in state:
            return to_plain(state["_val"])
        return {k: to_plain(v) for k, v in state.items() if not k.startswith("_")}
    return to_plain(state)


def to_plain(obj: Any) -> Any:
    """Namespaces -> dicts, omegaconf records -> their values, containers walked; tensors kept lazy."""
    if isinstance(obj, OmegaRecord):
        return _omega_value(obj)
    if isinstance(obj, Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj
