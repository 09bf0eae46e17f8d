"""compress / decompress: exact round trips, size, and damaged input."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hecsb_jax import coding
from hecsb_jax.coding import CodingTables
from hecsb_jax.coding import DecodeError
from hecsb_jax.entropy import rate
from hecsb_jax.entropy import tables_from_pmf

STATE_BYTES = 8  # the rANS final state at the head of every payload


def laplace_tables(num_channels, num_bins=33, precision=16, seed=0):
  rng = np.random.default_rng(seed)
  k = np.arange(num_bins) - num_bins // 2
  scale = rng.uniform(0.2, 5.0, size=(num_channels, 1))
  pmf = np.exp(-np.abs(k)[None, :] / scale)
  pmf = pmf / pmf.sum(axis=1, keepdims=True) * (1 - 1e-3)
  offset = rng.integers(-30, 10, num_channels) - num_bins // 2
  return tables_from_pmf(pmf, offset, precision)


def random_tables(num_channels, precision, seed):
  """Tables with ragged rows and random (not smooth) frequencies."""
  rng = np.random.default_rng(seed)
  total = 1 << precision
  width = min(total - 1, 40) + 2
  cdf = np.zeros((num_channels, width), np.int32)
  length = np.zeros(num_channels, np.int32)
  for c in range(num_channels):
    bins = int(rng.integers(1, width))  # K + 1 bins incl. the escape
    cuts = np.sort(rng.choice(np.arange(1, total), bins - 1, replace=False))
    row = np.concatenate([[0], cuts, [total]])
    cdf[c, : bins + 1] = row
    cdf[c, bins + 1:] = total
    length[c] = bins + 1
  offset = rng.integers(-100, 100, num_channels).astype(np.int32)
  return CodingTables(cdf, length, offset, precision).validate()


def draw(tables, shape, rng, escapes=True):
  """[*shape, C] int32 drawn from the tables' own distribution; an escape
  draw becomes a value just outside the table."""
  num_channels = tables.cdf.shape[0]
  out = np.empty((*shape, num_channels), np.int32)
  for c in range(num_channels):
    row = tables.cdf[c, : tables.cdf_length[c]]
    k = tables.cdf_length[c] - 2
    slots = rng.integers(0, 1 << tables.precision, shape)
    idx = np.searchsorted(row, slots, side="right") - 1
    if not escapes:
      idx = np.minimum(idx, k - 1)
    low = rng.random(shape) < 0.5
    below = -1 - rng.integers(0, 5, shape)
    above = k + rng.integers(0, 5, shape)
    value = np.where(idx < k, idx, np.where(low, below, above))
    out[..., c] = value + tables.offset[c]
  return out


def container_overhead(data):
  return coding.read_header(data).header_size + STATE_BYTES


@pytest.mark.parametrize("num_channels", [1, 7, 64])
@pytest.mark.parametrize(
    "batch_shape", [(0,), (1,), (3,), (2, 5), (1, 4, 4), (2, 1, 3, 2)]
)
def test_round_trip_is_exact_for_tables_from_pmf(num_channels, batch_shape):
  tables = laplace_tables(num_channels)
  rng = np.random.default_rng(len(batch_shape) * 100 + num_channels)
  symbols = draw(tables, batch_shape, rng)
  back = coding.decompress(coding.compress(symbols, tables), tables)
  assert back.dtype == np.int32 and back.shape == symbols.shape
  np.testing.assert_array_equal(back, symbols)


@pytest.mark.parametrize("precision", [1, 2, 5, 11, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_is_exact_for_random_ragged_tables(precision, seed):
  tables = random_tables(5, precision, seed)
  symbols = draw(tables, (97,), np.random.default_rng(seed))
  np.testing.assert_array_equal(
      coding.decompress(coding.compress(symbols, tables), tables), symbols
  )


def test_values_far_outside_the_table_round_trip():
  tables = laplace_tables(4)
  extremes = np.array(
      [-(2**31), -(2**30), -(2**30) - 1, -1, 0, 2**30, 2**30 + 1, 2**31 - 1],
      np.int32,
  )
  symbols = np.resize(extremes, (50, 4)).astype(np.int32)
  np.testing.assert_array_equal(
      coding.decompress(coding.compress(symbols, tables), tables), symbols
  )


def test_a_single_symbol_round_trips():
  tables = laplace_tables(1)
  for value in (0, 5, -(2**31)):
    symbols = np.array([value], np.int32)
    data = coding.compress(symbols, tables)
    np.testing.assert_array_equal(coding.decompress(data, tables), symbols)


def test_million_symbols_round_trip_within_a_tenth_of_a_percent_of_ideal():
  tables = laplace_tables(48)
  symbols = draw(tables, (1_000_000 // 48 + 1,), np.random.default_rng(7))
  data = coding.compress(symbols, tables)
  np.testing.assert_array_equal(coding.decompress(data, tables), symbols)
  ideal_bytes = rate.ideal_bits(symbols, tables) / 8
  overhead = container_overhead(data)
  print(
      f"\n10^6 symbols: {len(data)} bytes, ideal {ideal_bytes:.1f} +"
      f" {overhead} header/state: excess"
      f" {(len(data) - overhead) / ideal_bytes - 1:+.5%}"
  )
  assert len(data) <= 1.001 * ideal_bytes + overhead


def test_one_image_latent_overhead_is_small():
  # A few thousand symbols: what one image's bottleneck sends.
  tables = laplace_tables(48)
  symbols = draw(tables, (1, 8, 8), np.random.default_rng(8))
  data = coding.compress(symbols, tables)
  ideal_bytes = rate.ideal_bits(symbols, tables) / 8
  overhead = container_overhead(data)
  header = overhead - STATE_BYTES
  payload = len(data) - header
  print(
      f"\n{symbols.size} symbols: {len(data)} bytes = header {header} +"
      f" payload {payload} (ideal {ideal_bytes:.1f}, payload"
      f" {payload - ideal_bytes:+.1f} bytes; {len(data) / ideal_bytes - 1:+.2%}"
      " in all)"
  )
  # The payload: the 8-byte final state and one 32-bit word of rounding at
  # most beyond the ideal.
  assert payload <= ideal_bytes + STATE_BYTES + 4


def test_actual_bytes_track_ideal_bits_across_rates():
  for scale_seed in range(3):
    tables = laplace_tables(16, seed=scale_seed)
    symbols = draw(tables, (4000,), np.random.default_rng(scale_seed))
    data = coding.compress(symbols, tables)
    ideal_bytes = rate.ideal_bits(symbols, tables) / 8
    assert abs(len(data) - container_overhead(data) - ideal_bytes) <= 4 + (
        1e-3 * ideal_bytes
    )


def test_accepts_other_integer_dtypes_and_layouts():
  tables = laplace_tables(3)
  symbols = draw(tables, (10,), np.random.default_rng(0))
  want = coding.compress(symbols, tables)
  assert coding.compress(symbols.astype(np.int64), tables) == want
  fortran = np.asfortranarray(symbols)
  assert coding.compress(fortran, tables) == want
  wide = np.zeros((10, 6), np.int32)
  wide[:, ::2] = symbols
  assert coding.compress(wide[:, ::2], tables) == want
  assert np.array_equal(coding.decompress(bytearray(want), tables), symbols)
  assert np.array_equal(coding.decompress(memoryview(want), tables), symbols)


def test_compress_rejects_bad_symbols():
  tables = laplace_tables(3)
  with pytest.raises(TypeError, match="integers"):
    coding.compress(np.zeros((2, 3), np.float32), tables)
  with pytest.raises(ValueError, match="outside int32"):
    coding.compress(np.full((2, 3), 2**31, np.int64), tables)
  with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
    coding.compress(np.zeros((2, 4), np.int32), tables)
  with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
    coding.compress(np.int32(0), tables)


def test_compress_rejects_invalid_tables():
  tables = laplace_tables(2)
  cdf = tables.cdf.copy()
  cdf[1, 3] = cdf[1, 2]
  with pytest.raises(ValueError, match="tables"):
    coding.compress(np.zeros((1, 2), np.int32), tables._replace(cdf=cdf))


# ---------------------------------------------------------------------------
# Damaged input.


@pytest.fixture(scope="module")
def sample():
  tables = laplace_tables(8)
  symbols = draw(tables, (20, 3), np.random.default_rng(11))
  return tables, symbols, coding.compress(symbols, tables)


def test_every_truncation_raises_decode_error(sample):
  tables, _, data = sample
  for cut in range(len(data)):
    with pytest.raises(DecodeError):
      coding.decompress(data[:cut], tables)


@pytest.mark.parametrize("extra", [b"\0", b"\0\0\0\0", b"\xff" * 9])
def test_trailing_bytes_raise_decode_error(sample, extra):
  tables, _, data = sample
  with pytest.raises(DecodeError, match="trailing"):
    coding.decompress(data + extra, tables)


def test_every_single_bit_flip_raises_decode_error(sample):
  tables, _, data = sample
  buf = bytearray(data)
  for bit in range(len(buf) * 8):
    buf[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
      coding.decompress(bytes(buf), tables)
    buf[bit // 8] ^= 1 << (bit % 8)


def test_wrong_model_is_named_in_the_error(sample):
  tables, symbols, data = sample
  other = laplace_tables(8, seed=1)
  with pytest.raises(DecodeError, match="made for model [0-9a-f]{16}, these"):
    coding.decompress(data, other)
  assert coding.model_id(tables) != coding.model_id(other)


def test_wrong_magic_and_version_raise_decode_error(sample):
  tables, _, data = sample
  with pytest.raises(DecodeError, match="magic"):
    coding.decompress(b"PK" + data[2:], tables)
  with pytest.raises(DecodeError, match="version"):
    coding.decompress(data[:4] + b"\x02" + data[5:], tables)
  with pytest.raises(DecodeError):
    coding.decompress(b"", tables)


def test_a_header_claiming_huge_shapes_fails_before_allocating(sample):
  tables, _, data = sample
  header = coding.read_header(data)
  # Same model id, shape [2^40, 8]: would need 4 TiB.
  forged = (
      data[:13] + b"\x02" + b"\x80\x80\x80\x80\x80\x20" + b"\x08"
      + data[header.header_size:]
  )
  with pytest.raises(DecodeError, match="at most"):
    coding.decompress(forged, tables)
  with pytest.raises(DecodeError, match="at most 7"):
    coding.decompress(data, tables, max_symbols=7)


def test_random_damage_never_crashes_or_hangs():
  # In a subprocess so a crash in C shows up as a failure, not a dead run.
  script = textwrap.dedent(
      """
      import numpy as np
      from hecsb_jax import coding
      from tests.test_codec import laplace_tables, draw
      tables = laplace_tables(6)
      rng = np.random.default_rng(5)
      symbols = draw(tables, (300,), rng)
      data = coding.compress(symbols, tables)
      accepted = 0
      for trial in range(3000):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
          buf[int(rng.integers(len(buf)))] ^= int(rng.integers(1, 256))
        if trial % 3 == 0:
          buf = buf[: int(rng.integers(len(buf)))]
        if trial % 5 == 0:
          buf += bytes(rng.integers(0, 256, int(rng.integers(1, 20)), np.uint8))
        try:
          back = coding.decompress(bytes(buf), tables)
          accepted += 1
        except coding.DecodeError:
          pass
      print("accepted", accepted)
      """
  )
  result = subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      timeout=120,
      cwd=str(Path(__file__).resolve().parents[1]),
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "accepted 0"


def test_importing_coding_and_entropy_does_not_import_jax():
  script = (
      "import sys, hecsb_jax.coding, hecsb_jax.entropy\n"
      "hecsb_jax.entropy.CodingTables, hecsb_jax.entropy.tables_from_pmf\n"
      "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
      " ('jax', 'jaxlib', 'flax'))\n"
      "print(bad)\n"
  )
  result = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True,
      timeout=60,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def test_jax_names_load_lazily_from_entropy():
  import hecsb_jax.entropy as entropy  # pylint: disable=import-outside-toplevel

  assert callable(entropy.build_tables)
  assert entropy.FactorizedPrior.__name__ == "FactorizedPrior"
  with pytest.raises(AttributeError):
    entropy.no_such_name  # pylint: disable=pointless-statement
