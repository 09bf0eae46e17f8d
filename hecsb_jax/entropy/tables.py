"""Integer coding tables from a float pmf (quantization with an escape bin).

    pmf [C, K] float (+ tail mass) --tables_from_pmf--> CodingTables
        cdf [C, K+2] int32, cdf_length [C] int32, offset [C] int32, precision

The table format itself, its validation and its .npz I/O live in
`hecsb_jax.coding.tables` (numpy only, what the edge imports); this module
is the entropy model's side: turning probabilities into that format. numpy
only; `build_tables` (bottleneck.py) calls it with a trained prior's masses.
"""

import numpy as np

from hecsb_jax.coding.tables import CodingTables
from hecsb_jax.coding.tables import MAX_PRECISION

_INT32_MAX = np.iinfo(np.int32).max
_INT32_MIN = np.iinfo(np.int32).min


def tables_from_pmf(
    pmf: np.ndarray, offset: np.ndarray, precision: int = 16
) -> CodingTables:
  """Quantizes per-channel probabilities into coding tables.

  Frequencies minimize KL(p || f / 2^precision) over integers f >= 1 with
  sum 2^precision, where p is the pmf plus its tail mass on the escape. The
  objective is separable and convex in f, so a state in which no move of one
  unit of frequency from one bin to another lowers it is optimal; we reach
  it from rounded p * 2^precision by greedy unit moves. Deterministic.

  Args:
    pmf: [C, K] float, P(value = offset[c] + k); rows may sum to less than
      1, the remainder (the tail mass) goes to the escape bin. K may be 0.
    offset: [C] integers, the value of bin 0 per channel.
    precision: bits of the CDF, 1 ... 16; needs K + 1 <= 2^precision.

  Returns:
    CodingTables with cdf [C, K + 2] int32 and cdf_length = K + 2.

  Raises:
    ValueError: bad shapes, negative/non-finite pmf, rows summing to more
      than 1, or too many bins for the precision.
  """
  pmf = np.asarray(pmf, np.float64)
  if pmf.ndim != 2 or pmf.shape[0] < 1:
    raise ValueError(f"pmf must be [C >= 1, K], got shape {pmf.shape}")
  num_channels, num_bins = pmf.shape
  if isinstance(precision, bool) or not isinstance(
      precision, (int, np.integer)
  ):
    raise TypeError(f"precision must be an int, got {precision!r}")
  precision = int(precision)
  if not 1 <= precision <= MAX_PRECISION:
    raise ValueError(
        f"precision must be in 1..{MAX_PRECISION}, got {precision}"
    )
  total = 1 << precision
  if num_bins + 1 > total:
    raise ValueError(
        f"{num_bins} bins plus the escape need more than 2^{precision} ="
        f" {total} frequency slots"
    )
  if not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
    raise ValueError("pmf must be finite and non-negative")
  mass = pmf.sum(axis=1)
  if np.any(mass > 1.0 + 1e-6):
    c = int(np.argmax(mass))
    raise ValueError(
        f"pmf rows must sum to at most 1; channel {c} sums to {mass[c]}"
    )
  offset = np.asarray(offset)
  if offset.shape != (num_channels,) or offset.dtype.kind not in "iu":
    raise ValueError(
        f"offset must be [{num_channels}] integers, got {offset.dtype}"
        f" {offset.shape}"
    )
  offset = offset.astype(np.int64)
  if np.any(offset < _INT32_MIN) or np.any(offset + num_bins - 1 > _INT32_MAX):
    raise ValueError("offset ... offset + K - 1 must fit in int32")
  p = np.concatenate([pmf, np.maximum(1.0 - mass, 0.0)[:, None]], axis=1)
  p /= p.sum(axis=1, keepdims=True)
  freq = _quantize(p, total)
  cdf = np.zeros((num_channels, num_bins + 2), np.int64)
  np.cumsum(freq, axis=1, out=cdf[:, 1:])
  return CodingTables(
      cdf=cdf.astype(np.int32),
      cdf_length=np.full(num_channels, num_bins + 2, np.int32),
      offset=offset.astype(np.int32),
      precision=precision,
  ).validate()


def _quantize(p: np.ndarray, total: int) -> np.ndarray:
  """Integer frequencies >= 1 summing to `total` per row, min KL to p.

  Args:
    p: [C, B] float64, rows sum to 1 (B <= total).
    total: 2^precision.

  Returns:
    [C, B] int64.
  """
  rows = np.arange(p.shape[0])
  freq = np.maximum(np.rint(p * total), 1).astype(np.int64)

  def gain_up(f):  # decrease of -sum p log f from f -> f + 1
    return p * np.log1p(1.0 / f)

  def cost_down(f):  # increase from f -> f - 1; impossible below 1
    out = np.full(p.shape, np.inf)
    ok = f > 1
    out[ok] = -p[ok] * np.log1p(-1.0 / f[ok])
    return out

  # 1) Fix the sums one unit per row and step, where it hurts least.
  for _ in range(2 * total):
    deficit = total - freq.sum(axis=1)
    if not deficit.any():
      break
    up = deficit > 0
    down = deficit < 0  # some f > 1 exists: sum f > total >= B
    gain = gain_up(freq)
    cost = cost_down(freq)
    freq[rows[up], np.argmax(gain[up], axis=1)] += 1
    freq[rows[down], np.argmin(cost[down], axis=1)] -= 1
  # 2) Move single units while that lowers the KL (terminates: strict
  # decrease; the cap only guards against float ties).
  for _ in range(4 * p.shape[1] + 64):
    gain = gain_up(freq)
    cost = cost_down(freq)
    i = np.argmax(gain, axis=1)
    j = np.argmin(cost, axis=1)
    better = gain[rows, i] > cost[rows, j] * (1.0 + 1e-12)
    if not better.any():
      break
    freq[rows[better], i[better]] += 1
    freq[rows[better], j[better]] -= 1
  return freq
