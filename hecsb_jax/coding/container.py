"""The container around a coded tensor: magic, version, model id, shape.

Byte layout (native/rc.h, "Container", is the reference):

    "HJRC" | version (1) | model id (8) | rank (1) | dims (LEB128 each)
    | payload (rANS: 8-byte final state, then 32-bit words, little-endian)

The model id names the tables a payload was coded with, so a receiver with
other tables fails clearly instead of decoding garbage. It is a 64-bit hash
(rc.h, "Model id") of the tables' canonical little-endian words, ignoring
the padding past cdf_length:

    precision | C | offset[0..C) | cdf_length[0..C) | valid cdf entries

computed in C with integer arithmetic only, so it is the same on every
machine (the aarch64 cross-test pins it) and costs microseconds per call.

numpy + the extension only (no JAX).
"""

from typing import NamedTuple

import numpy as np

from hecsb_jax.coding import _rc
from hecsb_jax.coding.tables import CodingTables

MAGIC = b"HJRC"
FORMAT_VERSION = _rc.FORMAT_VERSION
MODEL_ID_SIZE = _rc.MODEL_ID_SIZE
DecodeError = _rc.DecodeError


class Header(NamedTuple):
  """A parsed container header.

  Attributes:
    model_id: 8 bytes, see `model_id`.
    shape: the coded tensor's shape, channels last.
    header_size: bytes before the payload.
  """

  model_id: bytes
  shape: tuple[int, ...]
  header_size: int


def model_id(tables: CodingTables) -> bytes:
  """8-byte identifier of `tables`, the same on every machine.

  Args:
    tables: coding tables (int32 arrays).

  Returns:
    8 bytes (native/rc.h, "Model id").

  Raises:
    ValueError: invalid tables.
  """
  return _rc.model_id(*table_arrays(tables), int(tables.precision))


def table_arrays(tables: CodingTables):
  """(cdf, cdf_length, offset) as C-contiguous int32 arrays."""
  out = []
  for name in ("cdf", "cdf_length", "offset"):
    a = np.asarray(getattr(tables, name))
    if a.dtype.kind not in "iu":
      raise TypeError(f"tables.{name} must be integers, got {a.dtype}")
    if a.dtype != np.int32 and a.size and (
        a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max
    ):
      raise ValueError(f"tables.{name} has values outside int32")
    out.append(np.ascontiguousarray(a, np.int32))
  return tuple(out)


def read_header(data: bytes) -> Header:
  """Parses the container header of `data` (any bytes-like object).

  Raises:
    DecodeError: not a container of a supported version, or cut short.
  """
  mid, shape, size = _rc.parse_header(data)
  return Header(mid, tuple(int(d) for d in shape), int(size))
