"""Coding tables estimated from observed symbols (per-channel histograms).

A trained model's tables come from its prior (`entropy.build_tables`).
A head that was changed after training (the int8 head) has no prior of
its own: its tables are the histograms of its own symbols on calibration
images, per channel, made into integer tables by `tables_from_pmf`.
numpy only.
"""

from __future__ import annotations

import numpy as np

from hecsb_jax.coding.tables import CodingTables
from hecsb_jax.entropy.tables import tables_from_pmf

# Mass left to the escape bin: values never seen in calibration (beyond
# the widened support) still code, at ~12 bits plus the escaped value.
TAIL_MASS = 2.0**-12
# Every bin of the support gets this pseudo-count (Krichevsky-Trofimov),
# so a value seen rarely or not at all in calibration stays cheap enough.
PSEUDO_COUNT = 0.5


def tables_from_symbols(symbols: np.ndarray, precision: int = 16,
                        margin: int = 1) -> CodingTables:
  """Per-channel tables for symbols like ``symbols``.

  Channel c's support is [min - margin, max + margin] of its observed
  values; all channels get the widest support's bin count K (as
  `build_tables` does), each from its own offset. P(bin) is proportional
  to count + PSEUDO_COUNT, scaled to 1 - TAIL_MASS.

  Args:
    symbols: integer [..., C] (e.g. [N, h, w, C]), channels last.
    precision: bits of the CDF.
    margin: bins added on each side of the observed range.

  Returns:
    validated `CodingTables`.

  Raises:
    ValueError: no symbols, non-integer symbols, or a support too wide
      for ``precision``.
  """
  symbols = np.asarray(symbols)
  if symbols.ndim < 1 or symbols.size == 0 or symbols.dtype.kind not in "iu":
    raise ValueError("symbols must be a non-empty integer array [..., C],"
                     f" got {symbols.dtype} {symbols.shape}")
  flat = symbols.reshape(-1, symbols.shape[-1]).astype(np.int64)
  lo = flat.min(axis=0) - margin
  hi = flat.max(axis=0) + margin
  num_bins = int(np.max(hi - lo + 1))
  counts = np.zeros((flat.shape[1], num_bins), np.float64)
  for c in range(flat.shape[1]):
    counts[c] = np.bincount(flat[:, c] - lo[c], minlength=num_bins)
  # Pseudo-counts only inside a channel's own support: bins past its
  # widened range belong to another channel's width, not to this one.
  inside = np.arange(num_bins)[None, :] <= (hi - lo)[:, None]
  counts += PSEUDO_COUNT * inside
  pmf = counts / counts.sum(axis=1, keepdims=True) * (1.0 - TAIL_MASS)
  return tables_from_pmf(pmf, lo.astype(np.int32), precision=precision)
