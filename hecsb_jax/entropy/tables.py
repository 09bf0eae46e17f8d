"""Integer coding tables: quantized per-channel CDFs with an escape bin.

    pmf [C, K] float (+ tail mass) --tables_from_pmf--> CodingTables
        cdf [C, K+2] int32, cdf_length [C] int32, offset [C] int32, precision

Row c codes the values offset[c] ... offset[c] + K_c - 1 (K_c =
cdf_length[c] - 2) as bins 0 ... K_c - 1; bin K_c is the escape, through
which the coder (native/rc.h) sends any other int32 value exactly. Every bin
has frequency cdf[k+1] - cdf[k] >= 1 out of 2^precision. Entries past
cdf_length[c] are padding and carry no meaning.

numpy only: the edge device loads tables with `CodingTables.load_npz`
without JAX. Saving and loading live here, beside the format they check,
because the receiver must never rebuild tables from floats (design.md §2).
"""

import os
from typing import NamedTuple

import numpy as np

MAX_PRECISION = 16
_INT32_MAX = np.iinfo(np.int32).max
_INT32_MIN = np.iinfo(np.int32).min
_NPZ_FORMAT = "hecsb_jax.CodingTables/1"


class CodingTables(NamedTuple):
  """Per-channel integer CDFs for the range coder.

  Attributes:
    cdf: [C, L] int32; row c is strictly increasing over its first
      cdf_length[c] entries, from 0 to 2^precision.
    cdf_length: [C] int32, K_c + 2 (K_c regular bins, one escape).
    offset: [C] int32, the value of bin 0 of each channel.
    precision: bits of the CDF, 1 ... 16.
  """

  cdf: np.ndarray
  cdf_length: np.ndarray
  offset: np.ndarray
  precision: int

  @property
  def num_channels(self) -> int:
    return int(np.shape(self.cdf)[0])

  def validate(self) -> "CodingTables":
    """Checks every rule the coder relies on; returns self.

    Raises:
      ValueError: naming the first broken rule (and channel).
      TypeError: an array is not int32 or precision is not an int.
    """
    cdf, cdf_length, offset = self.cdf, self.cdf_length, self.offset
    for name, a, ndim in (("cdf", cdf, 2), ("cdf_length", cdf_length, 1),
                          ("offset", offset, 1)):
      if not isinstance(a, np.ndarray) or a.dtype != np.int32:
        raise TypeError(
            f"{name} must be an int32 numpy array, got"
            f" {getattr(a, 'dtype', type(a).__name__)}"
        )
      if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got {a.shape}")
    if isinstance(self.precision, bool) or not isinstance(
        self.precision, (int, np.integer)
    ):
      raise TypeError(f"precision must be an int, got {self.precision!r}")
    precision = int(self.precision)
    if not 1 <= precision <= MAX_PRECISION:
      raise ValueError(
          f"precision must be in 1..{MAX_PRECISION}, got {precision}"
      )
    num_channels, width = cdf.shape
    if num_channels < 1 or width < 2:
      raise ValueError(f"cdf must be [C >= 1, L >= 2], got {cdf.shape}")
    if cdf_length.shape != (num_channels,) or offset.shape != (num_channels,):
      raise ValueError(
          f"cdf_length and offset must be [{num_channels}], got"
          f" {cdf_length.shape} and {offset.shape}"
      )
    length = cdf_length.astype(np.int64)
    _first_bad(
        (length < 2) | (length > width),
        f"cdf_length must be in 2..{width} (K + 2, the escape included)",
        length,
    )
    _first_bad(cdf[:, 0] != 0, "cdf must start at 0", cdf[:, 0])
    valid = np.arange(width)[None, :] < length[:, None]
    steps = np.diff(cdf.astype(np.int64), axis=1)
    flat = valid[:, 1:] & (steps <= 0)
    _first_bad(
        flat.any(axis=1),
        "cdf must be strictly increasing (every bin needs frequency >= 1)",
        np.argmax(flat, axis=1) + 1,
    )
    last = cdf[np.arange(num_channels), length - 1]
    _first_bad(
        last != (1 << precision),
        f"cdf[c, cdf_length[c] - 1] must be 2^precision = {1 << precision}",
        last,
    )
    top = offset.astype(np.int64) + length - 3
    _first_bad(
        top > _INT32_MAX,
        "offset + K - 1 (the last regular value) must fit in int32",
        top,
    )
    return self

  def save_npz(self, path: str | os.PathLike) -> None:
    """Writes the tables, validated, to an .npz file at exactly `path`."""
    self.validate()
    with open(path, "wb") as f:
      np.savez(
          f,
          format=np.array(_NPZ_FORMAT),
          cdf=self.cdf,
          cdf_length=self.cdf_length,
          offset=self.offset,
          precision=np.array(int(self.precision), np.int32),
      )

  @classmethod
  def load_npz(cls, path: str | os.PathLike) -> "CodingTables":
    """Reads tables written by `save_npz` and validates them.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a valid tables .npz (the message names
        the path and the problem).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"coding tables not found at {path!r} (expected an .npz written"
          " by CodingTables.save_npz)"
      )
    try:
      with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile, pickle and format errors alike
      raise ValueError(f"{path!r} is not a readable .npz file: {e}") from e
    missing = {"format", "cdf", "cdf_length", "offset", "precision"} - set(
        arrays
    )
    if missing:
      raise ValueError(
          f"{path!r} is not a CodingTables file: missing {sorted(missing)}"
      )
    if str(arrays["format"]) != _NPZ_FORMAT:
      raise ValueError(
          f"{path!r}: unknown tables format {str(arrays['format'])!r},"
          f" expected {_NPZ_FORMAT!r}"
      )
    precision = arrays["precision"]
    if precision.shape != () or precision.dtype.kind not in "iu":
      raise ValueError(f"{path!r}: precision must be an integer scalar")
    tables = cls(
        arrays["cdf"], arrays["cdf_length"], arrays["offset"], int(precision)
    )
    try:
      return tables.validate()
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path!r}: invalid coding tables: {e}") from e


def _first_bad(bad: np.ndarray, rule: str, values: np.ndarray) -> None:
  if np.any(bad):
    c = int(np.argmax(bad))
    raise ValueError(f"{rule}; channel {c} has {np.asarray(values)[c]}")


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
