"""Golden bitstreams: pin the container and payload format byte for byte.

Each case in tests/golden/ is <name>.npz (tables + symbols) and
<name>.hjrc (the bytes `compress` must produce). A failure here means the
format changed: old payloads would no longer decode. If that is intended,
bump RC_FORMAT_VERSION in native/rc.h and regenerate deliberately:

    REGENERATE_GOLDEN=1 python -m pytest -q tests/test_codec_golden.py
"""

import os
from pathlib import Path

import numpy as np
import pytest

from hecsb_jax import coding
from hecsb_jax.coding import CodingTables
from hecsb_jax.entropy import tables_from_pmf

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("REGENERATE_GOLDEN") == "1"


def _laplace(num_channels, num_bins, precision, seed):
  rng = np.random.default_rng(seed)
  k = np.arange(num_bins) - num_bins // 2
  pmf = np.exp(-np.abs(k)[None, :] / rng.uniform(0.3, 3, (num_channels, 1)))
  pmf = pmf / pmf.sum(axis=1, keepdims=True) * (1 - 2**-8)
  offset = np.full(num_channels, -(num_bins // 2))
  return tables_from_pmf(pmf, offset, precision)


def _make_cases():
  """name -> (tables, symbols). Only run when regenerating."""
  rng = np.random.default_rng(2024)
  latent_tables = _laplace(16, 15, 16, seed=1)
  latent = np.round(rng.laplace(0, 1.5, (1, 4, 4, 16))).astype(np.int32)
  latent.flat[[3, 50, 100, 200]] = [2**30, -(2**30), 2**31 - 1, -(2**31)]
  ragged_tables = _laplace(3, 9, 10, seed=2)
  ragged_tables.cdf_length[1] = 6  # shorten a row: K = 4
  ragged_tables.cdf[1, 5] = 1 << 10
  ragged_tables.cdf[1, 6:] = 1 << 10
  ragged = rng.integers(-6, 7, (7, 3)).astype(np.int32)
  return {
      "latent_1x4x4x16_p16": (latent_tables, latent),
      "ragged_7x3_p10": (ragged_tables.validate(), ragged),
      "empty_0x4_p8": (_laplace(4, 5, 8, seed=3), np.zeros((0, 4), np.int32)),
      "single_1_p4": (_laplace(1, 3, 4, seed=4), np.array([1], np.int32)),
  }


def _load(name):
  with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
    tables = CodingTables(
        z["cdf"], z["cdf_length"], z["offset"], int(z["precision"])
    ).validate()
    return tables, z["symbols"]


if REGENERATE:
  GOLDEN.mkdir(exist_ok=True)
  for _name, (_tables, _symbols) in _make_cases().items():
    np.savez(
        GOLDEN / f"{_name}.npz",
        cdf=_tables.cdf,
        cdf_length=_tables.cdf_length,
        offset=_tables.offset,
        precision=np.int32(_tables.precision),
        symbols=_symbols,
    )
    (GOLDEN / f"{_name}.hjrc").write_bytes(coding.compress(_symbols, _tables))

NAMES = sorted(p.stem for p in GOLDEN.glob("*.hjrc"))


def test_golden_cases_are_present():
  assert len(NAMES) == 4, f"expected 4 golden cases in {GOLDEN}, got {NAMES}"


@pytest.mark.parametrize("name", NAMES)
def test_compress_reproduces_golden_bytes(name):
  tables, symbols = _load(name)
  want = (GOLDEN / f"{name}.hjrc").read_bytes()
  assert coding.compress(symbols, tables) == want


@pytest.mark.parametrize("name", NAMES)
def test_golden_bytes_decode_to_golden_symbols(name):
  tables, symbols = _load(name)
  data = (GOLDEN / f"{name}.hjrc").read_bytes()
  back = coding.decompress(data, tables)
  assert back.shape == symbols.shape
  np.testing.assert_array_equal(back, symbols)
