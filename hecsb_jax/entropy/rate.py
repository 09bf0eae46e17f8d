"""Ideal code length of integer symbols under integer coding tables.

This is the yardstick for the coder: −Σ log2(f / 2^precision) over the bins
the coder actually codes, computed from the same quantized tables (not the
float prior), plus the exact cost of escapes. An ideal arithmetic coder
would produce this many bits; a real one adds a few bytes of termination
and a small per-symbol rounding loss.

Escapes follow native/rc.h ("Symbols"): a value outside
[offset, offset + K) costs the escape bin, then 6 bits for u, then u raw
bits, where d = 2(−1 − idx) for idx < 0, d = 2(idx − K) + 1 for idx ≥ K, and
u = bit_length(d + 1) − 1.

numpy only (no JAX).
"""

import numpy as np

# Bits of the uniform bin that carries u (its M is 64), per rc.h.
_ESCAPE_LENGTH_BITS = 6


def symbol_bits(symbols: np.ndarray, tables) -> np.ndarray:
  """Ideal bits of every symbol.

  Args:
    symbols: [..., C] integer array; channel = last index.
    tables: `hecsb_jax.coding.CodingTables` with C channels.

  Returns:
    [..., C] float64 bits per symbol.
  """
  cdf = np.asarray(tables.cdf, np.int64)
  cdf_length = np.asarray(tables.cdf_length, np.int64)
  offset = np.asarray(tables.offset, np.int64)
  symbols = np.asarray(symbols)
  num_channels = cdf.shape[0]
  if symbols.ndim < 1 or symbols.shape[-1] != num_channels:
    raise ValueError(
        f"symbols must have shape [..., {num_channels}] to match the tables,"
        f" got {symbols.shape}"
    )
  num_bins = cdf_length - 2  # K per channel; bin K is the escape
  idx = symbols.astype(np.int64) - offset
  escaped = (idx < 0) | (idx >= num_bins)
  bin_index = np.where(escaped, num_bins, idx)
  channel = np.broadcast_to(np.arange(num_channels), symbols.shape)
  freq = cdf[channel, bin_index + 1] - cdf[channel, bin_index]
  bits = float(tables.precision) - np.log2(freq.astype(np.float64))
  d = np.where(idx < 0, 2 * (-1 - idx), 2 * (idx - num_bins) + 1)
  g = np.where(escaped, d + 1, 1)
  # bit_length(g) - 1 = floor(log2 g), exact for g < 2^53 via frexp.
  u = np.frexp(g.astype(np.float64))[1] - 1
  return bits + np.where(escaped, _ESCAPE_LENGTH_BITS + u, 0.0)


def ideal_bits(symbols: np.ndarray, tables) -> float:
  """Total ideal bits of `symbols` under `tables` (see `symbol_bits`)."""
  return float(np.sum(symbol_bits(symbols, tables)))
