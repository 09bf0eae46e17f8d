"""The container around a coded tensor: magic, version, model id, shape.

Byte layout (native/rc.h, "Container", is the reference):

    "HJRC" | version (1) | model id (8) | rank (1) | dims (LEB128 each)
    | payload (rANS: 8-byte final state, then 32-bit words, little-endian)

The model id names the tables a payload was coded with, so a receiver with
other tables fails clearly instead of decoding garbage. It is the first 8
bytes of SHA-256 over a canonical little-endian serialization of the tables
that ignores the padding past cdf_length:

    u32 precision | u32 C | C x i32 offset | C x u32 cdf_length
    | the valid cdf entries, row by row, as i32

numpy + the extension only (no JAX).
"""

import hashlib
from typing import NamedTuple

import numpy as np

from hecsb_jax.coding import _rc
from hecsb_jax.entropy.tables import CodingTables

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
    The first 8 bytes of SHA-256 over the canonical serialization above.
  """
  cdf = np.asarray(tables.cdf)
  length = np.asarray(tables.cdf_length).astype(np.int64)
  valid = np.arange(cdf.shape[1])[None, :] < length[:, None]
  h = hashlib.sha256()
  h.update(np.array([tables.precision, cdf.shape[0]], "<u4").tobytes())
  h.update(np.asarray(tables.offset).astype("<i4").tobytes())
  h.update(length.astype("<u4").tobytes())
  h.update(cdf[valid].astype("<i4").tobytes())
  return h.digest()[:MODEL_ID_SIZE]


def read_header(data: bytes) -> Header:
  """Parses the container header of `data` (any bytes-like object).

  Raises:
    DecodeError: not a container of a supported version, or cut short.
  """
  mid, shape, size = _rc.parse_header(data)
  return Header(mid, tuple(int(d) for d in shape), int(size))
