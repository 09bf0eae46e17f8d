"""Reads torch state dicts from .safetensors and .pth files, without torch.

    file.safetensors ──► safetensors (numpy API) ────────┐
    file.pth (zip) ──► data.pkl ──► restricted unpickler ├─► {name: ndarray}
                       data/<key> ─► buffers, bounds ────┘

A `.pth` written by `torch.save` (the zip format of torch >= 1.6) is a zip
archive holding `<prefix>/data.pkl`, a pickle in which every tensor is a
call `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
and every storage a persistent id `("storage", torch.FloatStorage, key,
location, numel)` naming the raw little-endian buffer `<prefix>/data/<key>`.
The legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`)
is the same pickle between a small header and the buffers, concatenated.

Unpickling normally imports and calls whatever the file names, which would
let a crafted file run arbitrary code. Here `find_class` resolves only the
globals a state dict needs (an allow-list, mapped to inert stand-ins that
record storages and tensor layouts) and refuses everything else with
`StateDictError`; nothing from torch is imported or needed. Arrays are
built from the raw buffers only after unpickling, with bounds checked.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np


class StateDictError(ValueError):
  """A weights file is unreadable or unsafe (fitting it to a model is
  `hecsb_jax.models.weights.WeightsError`'s job)."""


# The magic number torch's legacy (non-zip) format pickles first.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class _StorageType:
  """Stand-in for `torch.FloatStorage` and friends: only carries a dtype."""

  def __init__(self, name: str, dtype):
    self.name = name
    self.dtype = np.dtype(dtype)

  def __repr__(self):
    return f"torch.{self.name}"


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in (
        ("FloatStorage", np.float32),
        ("DoubleStorage", np.float64),
        ("HalfStorage", np.float16),
        ("BFloat16Storage", ml_dtypes.bfloat16),
        ("LongStorage", np.int64),
        ("IntStorage", np.int32),
        ("ShortStorage", np.int16),
        ("CharStorage", np.int8),
        ("ByteStorage", np.uint8),
        ("BoolStorage", np.bool_),
    )
}


class _Storage:
  """A storage named by the pickle; its buffer may arrive after the pickle.

  In the zip format the buffer is read when the pickle names it; in the
  legacy format all buffers follow the pickle, so tensors are built only
  once `data` is set (see `_Tensor`).
  """

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key = key
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None


class _Tensor:
  """A tensor as `torch._utils._rebuild_tensor_v2` describes it."""

  def __init__(self, storage, offset, size, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    ints = (offset, *size, *stride)
    if (
        not isinstance(storage, _Storage)
        or not all(type(i) is int and i >= 0 for i in ints)  # pylint: disable=unidiomatic-typecheck
        or len(size) != len(stride)
    ):
      raise StateDictError(
          f"bad tensor: storage {storage!r}, offset {offset!r}, size "
          f"{size!r}, stride {stride!r}"
      )
    self.storage = storage
    self.offset = offset
    self.shape = tuple(size)
    self.stride = tuple(stride)

  def to_numpy(self) -> np.ndarray:
    """A contiguous copy, so that no view into the file's buffer escapes."""
    data = self.storage.data
    if 0 in self.shape:
      return np.empty(self.shape, data.dtype)
    last = self.offset + sum(
        (n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)
    )
    if last >= data.size:
      raise StateDictError(
          f"tensor of shape {self.shape} (offset {self.offset}, stride "
          f"{self.stride}) reads past its storage of {data.size} elements"
      )
    view = np.lib.stride_tricks.as_strided(
        data[self.offset :],
        shape=self.shape,
        strides=tuple(s * data.itemsize for s in self.stride),
        writeable=False,
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  """`torch._utils._rebuild_parameter`: an nn.Parameter is its data here."""
  del requires_grad, backward_hooks, unused
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): t for name, t in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a state dict, resolving only `_ALLOWED_GLOBALS`.

  Storages become `_Storage` records, collected in `storages` by key.
  """

  def __init__(self, file):
    super().__init__(file)
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise StateDictError(
          f"refusing to unpickle {module}.{name}: only tensors, storages "
          "and OrderedDict may appear in a state dict"
      ) from None

  def persistent_load(self, pid):
    # Zip format: ("storage", type, key, location, numel); the legacy
    # format appends view metadata, which is None for plain storages.
    if (
        not isinstance(pid, tuple)
        or len(pid) not in (5, 6)
        or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)
        or not isinstance(pid[2], str)
        or type(pid[4]) is not int  # pylint: disable=unidiomatic-typecheck
        or pid[4] < 0
        or (len(pid) == 6 and pid[5] is not None)
    ):
      raise StateDictError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _, numel = pid[:5]
    storage = self.storages.setdefault(
        key, _Storage(key, storage_type.dtype, numel)
    )
    if storage.dtype != storage_type.dtype or storage.numel != numel:
      raise StateDictError(f"storage {key!r} is named with two layouts")
    return storage


def _buffer(raw: bytes, storage: _Storage, little_endian: bool, where: str):
  nbytes = storage.numel * storage.dtype.itemsize
  if len(raw) < nbytes:
    raise StateDictError(
        f"storage {where} holds {len(raw)} bytes, expected {nbytes}"
    )
  stored = storage.dtype.newbyteorder("<" if little_endian else ">")
  return np.frombuffer(raw, stored, count=storage.numel).astype(storage.dtype)


def _read_zip(path: str) -> object:
  """The unpickled object of a zip-format `.pth` file."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise StateDictError(
          f"expected one data.pkl in the archive, found {len(pickles)}"
      )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()
    if byteorder not in ("little", "big"):
      raise StateDictError(f"unknown byteorder record {byteorder!r}")
    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])))
    obj = unpickler.load()
    for key, storage in unpickler.storages.items():
      record = f"{prefix}data/{key}"
      if record not in names:
        raise StateDictError(f"storage {record!r} is missing")
      storage.data = _buffer(
          archive.read(record), storage, byteorder == "little", repr(record)
      )
  return obj


def _read_legacy(path: str) -> object:
  """The unpickled object of a legacy (torch < 1.6) `.pth` file.

  Layout: pickles of the magic number, the protocol version (1001) and a
  sys-info dict; the pickled object; a pickled list of storage keys; then
  per key an int64 element count and the raw buffer.
  """
  with open(path, "rb") as f:
    stream = io.BytesIO(f.read())
  header = [_RestrictedUnpickler(stream).load() for _ in range(3)]
  sys_info = header[2]
  if header[1] != 1001 or not isinstance(sys_info, dict):
    raise StateDictError(f"unknown legacy header {header[1:]!r}")
  unpickler = _RestrictedUnpickler(stream)
  obj = unpickler.load()
  keys = _RestrictedUnpickler(stream).load()
  if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
    raise StateDictError("legacy storage list does not match the pickle")
  little_endian = bool(sys_info.get("little_endian", True))
  for key in keys:
    storage = unpickler.storages[key]
    count = stream.read(8)
    if len(count) != 8:
      raise StateDictError(f"storage {key!r} is truncated")
    numel = int.from_bytes(count, "little" if little_endian else "big")
    if numel != storage.numel:
      raise StateDictError(
          f"storage {key!r} holds {numel} elements, expected {storage.numel}"
      )
    raw = stream.read(numel * storage.dtype.itemsize)
    storage.data = _buffer(raw, storage, little_endian, repr(key))
  return obj


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state dict saved by `torch.save`, safely, without torch.

  Args:
    path: a `.pth`/`.pt`/`.bin` file holding a dict of tensors, in the zip
      format (torch >= 1.6) or the legacy one.

  Returns:
    {name: array} in file order, each a contiguous copy with the tensor's
    shape and dtype (float32, float16, bfloat16, int64, ...).

  Raises:
    StateDictError: naming the file, for a malformed or truncated file, a
      pickle that names anything but tensors, or a value that is no tensor.
  """
  path = os.fspath(path)
  try:
    if zipfile.is_zipfile(path):
      obj = _read_zip(path)
    else:
      with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
      if head != _LEGACY_MAGIC:
        raise StateDictError("neither a zip archive nor torch's legacy format")
      obj = _read_legacy(path)
    return _as_state_dict(obj)
  except (
      StateDictError,
      pickle.UnpicklingError,
      zipfile.BadZipFile,
      EOFError,
      UnicodeDecodeError,
      ValueError,
      # What a malformed pickle raises on the way (wrong argument counts
      # or types of allowed calls, unknown memo keys, ...).
      TypeError,
      KeyError,
      IndexError,
      AttributeError,
  ) as e:
    raise StateDictError(f"{path}: {e}") from e


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads every tensor of a `.safetensors` file.

  Args:
    path: the file.

  Returns:
    {name: array} with the stored shapes and dtypes.

  Raises:
    StateDictError: naming the file, when its header or data is malformed.
  """
  # Imported here so that the .pth path works without the package.
  try:
    import safetensors  # pylint: disable=g-import-not-at-top
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {os.fspath(path)} needs the safetensors package "
        "(pip install safetensors)"
    ) from e

  path = os.fspath(path)
  try:
    return dict(safetensors.numpy.load_file(path))
  except safetensors.SafetensorError as e:
    raise StateDictError(f"{path}: not a valid safetensors file: {e}") from e


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state dict by the file's suffix.

  Args:
    path: `.safetensors`, or `.pth`, `.pt`, `.bin` (torch.save's zip).

  Returns:
    {name: array}, as `read_safetensors` or `read_pth`.

  Raises:
    StateDictError: for another suffix, or as those functions.
  """
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix == ".safetensors":
    return read_safetensors(path)
  if suffix in (".pth", ".pt", ".bin"):
    return read_pth(path)
  raise StateDictError(
      f"{os.fspath(path)}: unknown weights suffix {suffix!r}; expected "
      ".safetensors, .pth, .pt or .bin"
  )


def _as_state_dict(obj) -> dict[str, np.ndarray]:
  if not isinstance(obj, dict):
    raise StateDictError(
        f"expected a dict of tensors, found {type(obj).__name__}"
    )
  bad = [
      k
      for k, v in obj.items()
      if not isinstance(k, str) or not isinstance(v, _Tensor)
  ]
  if bad:
    raise StateDictError(
        f"expected a dict of tensors; entries {bad[:5]!r} are not tensors "
        "(a training checkpoint? save its state dict)"
    )
  return {k: v.to_numpy() for k, v in obj.items()}
