"""Integer coding tables: the format the coder reads, checked and stored.

    CodingTables
        cdf [C, L] int32, cdf_length [C] int32, offset [C] int32, precision

Row c codes the values offset[c] ... offset[c] + K_c - 1 (K_c =
cdf_length[c] - 2) as bins 0 ... K_c - 1; bin K_c is the escape, through
which the coder (native/rc.h) sends any other int32 value exactly. Every bin
has frequency cdf[k+1] - cdf[k] >= 1 out of 2^precision. Entries past
cdf_length[c] are padding and carry no meaning.

The tables are made on the host from a trained prior
(`hecsb_jax.entropy.build_tables`, `tables_from_pmf`), saved with
`CodingTables.save_npz` and loaded on the receiver with `load_tables`, which
never rebuilds them from floats (design.md §2). This module holds only the
integer format, so it needs numpy alone: an edge device reads tables without
`hecsb_jax.entropy` or JAX.
"""

import os
from typing import NamedTuple

import numpy as np

MAX_PRECISION = 16
_INT32_MAX = np.iinfo(np.int32).max
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
    for name, a, ndim in (
        ("cdf", cdf, 2),
        ("cdf_length", cdf_length, 1),
        ("offset", offset, 1),
    ):
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


def load_tables(path: str | os.PathLike) -> CodingTables:
  """Reads tables written by `CodingTables.save_npz` and validates them.

  The same as `CodingTables.load_npz`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is not a valid tables .npz.
  """
  return CodingTables.load_npz(path)
