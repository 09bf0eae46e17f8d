"""compress / decompress: int32 tensors <-> self-describing bytes.

    symbols [..., C] int32 --compress(tables)--> container bytes
    container bytes --decompress(tables)--> symbols [..., C] int32

The native rANS coder (native/rc.h) does the coding in one C call per
tensor; this module checks shapes and dtypes, stamps and verifies the model
id, and keeps a damaged header from allocating absurd amounts of memory.
numpy + the extension only (no JAX).
"""

import math

import numpy as np

from hecsb_jax.coding import _rc
from hecsb_jax.coding import container
from hecsb_jax.coding.tables import CodingTables

DecodeError = _rc.DecodeError

# Only for tables so peaked that no bound follows from the payload size
# (every channel's most likely bin above 1 - 2^-15); see _max_symbols.
_FALLBACK_MAX_SYMBOLS = 1 << 28
_CHEAP_SYMBOLS_PER_BYTE = 64


def compress(symbols, tables: CodingTables) -> bytes:
  """Entropy-codes integer symbols into a container.

  Args:
    symbols: [..., C] int32 array (or any integer array whose values fit in
      int32, e.g. a JAX array of rounded latents); C = tables' channels,
      channels last. Values outside a channel's table are coded exactly
      through the escape bin.
    tables: `CodingTables` (int32 arrays, as `load_tables` or
      `hecsb_jax.entropy.build_tables` returns them).

  Returns:
    The container: header (magic, version, model id, shape) + payload.

  Raises:
    TypeError: symbols are not integers.
    ValueError: wrong shape, values outside int32, or invalid tables.
  """
  symbols = _int32_array(symbols, "symbols")
  num_channels = np.shape(tables.cdf)[0]
  if symbols.ndim < 1 or symbols.shape[-1] != num_channels:
    raise ValueError(
        f"symbols must have shape [..., {num_channels}] (channels last, as"
        f" the tables), got {symbols.shape}"
    )
  cdf, cdf_length, offset = container.table_arrays(tables)
  return _rc.encode(
      symbols.shape, symbols, cdf, cdf_length, offset, int(tables.precision)
  )


def decompress(data, tables: CodingTables, *, max_symbols: int | None = None):
  """Decodes a container made by `compress` with the same tables.

  Args:
    data: the container (bytes, bytearray or memoryview).
    tables: the `CodingTables` it was coded with.
    max_symbols: optional cap on the symbol count the header may claim
      (besides the bound implied by the payload size).

  Returns:
    [..., C] int32 numpy array, the original symbols and shape.

  Raises:
    DecodeError: `data` is truncated, damaged, has trailing bytes, is not a
      container, or was made for other tables.
    ValueError: invalid tables.
  """
  header = container.read_header(data)
  cdf, cdf_length, offset = container.table_arrays(tables)
  num_symbols = math.prod(header.shape)
  payload_size = memoryview(data).nbytes - header.header_size
  # A claim of up to _CHEAP_SYMBOLS_PER_BYTE symbols per payload byte costs
  # memory in proportion to the input, so it needs no tighter check.
  if num_symbols <= _CHEAP_SYMBOLS_PER_BYTE * max(payload_size, 1024):
    limit = num_symbols
  else:
    limit = _max_symbols(tables, payload_size)
  if max_symbols is not None:
    limit = min(limit, max_symbols)
  if num_symbols > limit:
    raise DecodeError(
        f"header claims {num_symbols} symbols (shape {header.shape}); a"
        f" payload of {payload_size} bytes holds at most {limit} under these"
        " tables"
    )
  out = np.empty(header.shape, np.int32)
  # Checks the model id (DecodeError naming both) and the channel count
  # before it decodes.
  _rc.decode(data, cdf, cdf_length, offset, int(tables.precision), out)
  return out


def _max_symbols(tables: CodingTables, payload_size: int) -> int:
  """Most symbols a payload of `payload_size` bytes can decode to.

  Decoding a bin of frequency f at precision n takes the state x from
  [2^31, 2^63) to below (f / 2^n) x (1 + 2^(n-31)), and each 32-bit word
  read multiplies it by at most 2^32; the state starts below 2^63 and must
  end at or above 2^31. So over R rows of C symbols,
    R * sum_c (n - log2 max_f_c - log2(1 + 2^(n-31))) < 32 * (words + 1).
  """
  n = int(tables.precision)
  cdf = np.asarray(tables.cdf, np.int64)
  length = np.asarray(tables.cdf_length, np.int64)
  num_channels = cdf.shape[0]
  freq = np.diff(cdf, axis=1)
  freq[np.arange(cdf.shape[1] - 1)[None, :] >= (length - 1)[:, None]] = 0
  slack = math.log2(1.0 + 2.0 ** (n - 31))
  with np.errstate(divide="ignore", invalid="ignore"):
    bits_per_row = float(np.sum(n - np.log2(freq.max(axis=1)))) - (
        num_channels * slack
    )
  if not math.isfinite(bits_per_row) or bits_per_row <= 1e-9:
    # Invalid tables (the decoder will say so) or nearly certain symbols.
    return _FALLBACK_MAX_SYMBOLS
  words = max(payload_size - _rc.EMPTY_PAYLOAD_SIZE, 0) // 4
  rows = math.floor(32.0 * (words + 1) / bits_per_row * (1 + 1e-9)) + 1
  return rows * num_channels


def _int32_array(x, name: str) -> np.ndarray:
  """C-contiguous int32 view or copy of x; integers that do not fit fail."""
  a = np.asarray(x)
  if a.dtype == np.int32:
    return np.ascontiguousarray(a)
  if a.dtype.kind not in "iu":
    raise TypeError(f"{name} must be integers (int32), got dtype {a.dtype}")
  if a.size and (
      a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max
  ):
    raise ValueError(f"{name} has values outside int32")
  return np.ascontiguousarray(a, np.int32)
