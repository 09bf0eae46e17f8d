"""The C coder and its thin binding, hecsb_jax.coding._rc."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hecsb_jax.coding import _rc
from hecsb_jax.entropy.tables import tables_from_pmf

NATIVE = Path(__file__).resolve().parents[1] / "native"


@pytest.fixture(scope="module")
def tables():
  k = np.arange(21) - 10
  pmf = np.exp(-np.abs(k)[None, :] / np.array([[0.5], [2.0], [6.0]]))
  pmf = pmf / pmf.sum(axis=1, keepdims=True) * 0.999
  return tables_from_pmf(pmf, np.array([-10, -12, -8]), 16)


def _args(t):
  return t.cdf, t.cdf_length, t.offset, t.precision


def _encode(t, symbols, **kw):
  return _rc.encode(symbols.shape, symbols, *_args(t), **kw)


def _symbols(num_rows, seed=0):
  rng = np.random.default_rng(seed)
  s = np.round(rng.laplace(0, 3, (num_rows, 3))).astype(np.int32)
  s[::97, 1] = 2**31 - 1  # some escapes
  return s


@pytest.fixture(scope="module")
def make_out(tmp_path_factory):
  """A fresh build folder: the source tree may be read-only (a Bazel sandbox)
  or shared with another build, so nothing is written to native/out."""
  return tmp_path_factory.mktemp("native_out")


def _run_make(target, out_dir, timeout):
  result = subprocess.run(
      ["make", "-C", str(NATIVE), f"OUT={out_dir}", target],
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_c_test_program_passes(make_out):
  out = _run_make("test", make_out, timeout=300)
  assert "rc_test: all checks passed" in out


@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None
    or shutil.which("qemu-aarch64") is None
    or shutil.which("make") is None,
    reason=(
        "needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian:"
        " gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
    ),
)
def test_aarch64_build_passes_and_writes_the_same_bytes(make_out):
  out = _run_make("cross-test", make_out, timeout=600)
  assert "identical bytes" in out


def test_scratch_does_not_change_the_bytes(tables):
  symbols = _symbols(5000)
  plain = _encode(tables, symbols, use_scratch=False)
  fast = _encode(tables, symbols, use_scratch=True)
  auto = _encode(tables, symbols)
  assert plain == fast == auto
  for use in (False, True, None):
    out = np.empty_like(symbols)
    _rc.decode(plain, *_args(tables), out, use_scratch=use)
    np.testing.assert_array_equal(out, symbols)


def test_header_round_trips(tables):
  symbols = _symbols(6).reshape(2, 3, 3)
  data = _encode(tables, symbols)
  model_id, shape, size = _rc.parse_header(data)
  assert model_id == _rc.model_id(*_args(tables))
  assert shape == (2, 3, 3)
  assert data[:5] == b"HJRC\x01" and data[5:13] == model_id
  assert data[13] == 3 and size == 17


@pytest.mark.parametrize(
    "symbols, error, match",
    [
        (np.zeros((4, 3), np.int64), TypeError, "int32"),
        (np.zeros((4, 3), np.uint32), TypeError, "int32"),
        (np.zeros((4, 3), np.float32), TypeError, "int32"),
        (np.zeros((4, 3), ">i4"), TypeError, "int32"),
        (np.zeros((4, 6), np.int32)[:, ::2], ValueError, "contiguous"),
        (np.zeros((3, 4), np.int32).T, ValueError, "contiguous"),
        (b"\0" * 48, TypeError, "int32"),
        ([0, 1, 2], TypeError, "buffer|bytes-like"),
    ],
)
def test_encode_rejects_wrong_dtype_and_layout(tables, symbols, error, match):
  with pytest.raises(error, match=match):
    _rc.encode((4, 3), symbols, *_args(tables))


def test_decode_rejects_bad_out_buffers(tables):
  symbols = _symbols(4)
  data = _encode(tables, symbols)
  read_only = np.empty_like(symbols)
  read_only.flags.writeable = False
  with pytest.raises(ValueError, match="read-only|writable"):
    _rc.decode(data, *_args(tables), read_only)
  with pytest.raises(TypeError, match="int32"):
    _rc.decode(data, *_args(tables), np.empty((4, 3), np.int64))
  with pytest.raises(ValueError, match="contiguous"):
    _rc.decode(data, *_args(tables), np.empty((4, 6), np.int32)[:, ::2])
  with pytest.raises(ValueError, match="holds 12"):
    _rc.decode(data, *_args(tables), np.empty((5, 3), np.int32))


def test_table_arguments_are_checked(tables):
  symbols = _symbols(2)
  cdf, length, offset, precision = _args(tables)
  with pytest.raises(ValueError, match="dimension"):
    _rc.encode((2, 3), symbols, cdf[0], length, offset, precision)
  with pytest.raises(ValueError, match="cdf_length, offset"):
    _rc.encode((2, 3), symbols, cdf, length[:2], offset, precision)
  with pytest.raises(ValueError, match="invalid coding tables"):
    _rc.encode((2, 3), symbols, cdf, length, offset, 15)
  with pytest.raises(TypeError, match="int32"):
    _rc.encode((2, 3), symbols, cdf.astype(np.int64), length, offset, precision)
  with pytest.raises(ValueError, match="invalid coding tables"):
    _rc.model_id(cdf, length, offset, 15)


def test_shape_arguments_are_checked(tables):
  symbols = _symbols(2)
  with pytest.raises(ValueError, match="product"):
    _rc.encode((3, 3), symbols, *_args(tables))
  with pytest.raises(ValueError, match="last dim"):
    _rc.encode((3, 2), symbols, *_args(tables))
  with pytest.raises(ValueError, match="rank"):
    _rc.encode((), symbols, *_args(tables))
  with pytest.raises(OverflowError):
    _rc.encode((-2, -3), symbols, *_args(tables))


def test_wrong_tables_are_a_decode_error_naming_both_models(tables):
  symbols = _symbols(5)
  data = _encode(tables, symbols)
  cdf, length, offset, precision = _args(tables)
  offset = offset + 1
  with pytest.raises(
      _rc.DecodeError,
      match=(
          f"made for model {_rc.model_id(*_args(tables)).hex()}, these tables"
          f" are model {_rc.model_id(cdf, length, offset, precision).hex()}"
      ),
  ):
    _rc.decode(data, cdf, length, offset, precision, np.empty_like(symbols))


def _reference_model_id(cdf, cdf_length, offset, precision):
  """The model id as native/rc.h's "Model id" text defines it, in Python."""
  mask = (1 << 64) - 1
  p1, p2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9

  def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & mask

  def fmix(z):
    z ^= z >> 33
    z = (z * 0xFF51AFD7ED558CCD) & mask
    z ^= z >> 33
    z = (z * 0xC4CEB9FE1A85EC53) & mask
    return z ^ (z >> 33)

  words = [precision, len(cdf_length), *offset, *cdf_length]
  for row, n in zip(cdf, cdf_length):
    words += list(row[:n])
  words = [int(w) & 0xFFFFFFFF for w in words]
  num_words = len(words)
  words += [0] * (num_words % 2)
  lanes = [((i + 1) * 0xD6E8FEB86659FD93) & mask for i in range(4)]
  for k in range(len(words) // 2):
    pair = words[2 * k] | (words[2 * k + 1] << 32)
    lanes[k % 4] = (rotl(lanes[k % 4] ^ pair, 29) * p2) & mask
  h = (num_words * p1) & mask
  for lane in lanes:
    h = (rotl(h ^ fmix(lane), 27) * p2) & mask
  return fmix(h).to_bytes(8, "little")


@pytest.mark.parametrize("seed", range(4))
def test_model_id_matches_the_documented_definition(seed):
  rng = np.random.default_rng(seed)
  num_channels, width = int(rng.integers(1, 6)), int(rng.integers(3, 12))
  cdf = np.full((num_channels, width), -5, np.int32)  # padding
  length = rng.integers(2, width + 1, num_channels).astype(np.int32)
  for c in range(num_channels):
    cuts = np.sort(rng.choice(np.arange(1, 1024), length[c] - 2, False))
    cdf[c, : length[c]] = np.concatenate([[0], cuts, [1024]])
  offset = rng.integers(-(2**31), 2**31 - 2000, num_channels).astype(np.int32)
  got = _rc.model_id(cdf, length, offset, 10)
  assert got == _reference_model_id(
      cdf.tolist(), length.tolist(), offset.tolist(), 10
  )


def test_decode_errors_are_decode_errors(tables):
  symbols = _symbols(10)
  data = _encode(tables, symbols)
  out = np.empty_like(symbols)
  assert issubclass(_rc.DecodeError, ValueError)
  for bad in (data[:-1], data + b"\0", b"XJRC" + data[4:], data[:3]):
    with pytest.raises(_rc.DecodeError):
      _rc.decode(bad, *_args(tables), out)
