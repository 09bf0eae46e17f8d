"""Integer coding tables: quantization (entropy), validation and .npz I/O
(coding)."""

import itertools

import numpy as np
import pytest

from hecsb_jax.coding import CodingTables
from hecsb_jax.coding import load_tables
from hecsb_jax.entropy import tables_from_pmf


def _laplace_pmf(num_channels, num_bins, tail=1e-3, seed=0):
  rng = np.random.default_rng(seed)
  k = np.arange(num_bins) - num_bins // 2
  scale = rng.uniform(0.3, 4.0, size=(num_channels, 1))
  pmf = np.exp(-np.abs(k)[None, :] / scale)
  return pmf / pmf.sum(axis=1, keepdims=True) * (1 - tail)


def _kl(p, freq, total):
  q = freq / total
  nz = p > 0
  return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def _freqs(t):
  return [np.diff(t.cdf[c, : t.cdf_length[c]]) for c in range(len(t.offset))]


@pytest.mark.parametrize("precision", [4, 8, 12, 16])
def test_every_bin_has_frequency_and_rows_sum_to_total(precision):
  pmf = _laplace_pmf(5, min(11, (1 << precision) - 1))
  pmf[0, :3] = 0.0  # zero probability still needs a codable bin
  t = tables_from_pmf(pmf, np.arange(5) - 3, precision)
  assert t.cdf.dtype == np.int32 and t.cdf.shape == (5, pmf.shape[1] + 2)
  assert np.all(t.cdf_length == pmf.shape[1] + 2)
  for f in _freqs(t):
    assert f.min() >= 1 and f.sum() == 1 << precision


def test_tail_mass_goes_to_the_escape_bin():
  pmf = np.full((1, 10), 0.07)  # sums to 0.7: 0.3 is tail
  t = tables_from_pmf(pmf, np.array([0]), 16)
  escape = t.cdf[0, 11] - t.cdf[0, 10]
  assert abs(escape / 65536 - 0.3) < 1e-4


def test_escape_gets_a_slot_even_without_tail_mass():
  pmf = np.array([[0.5, 0.5]])
  t = tables_from_pmf(pmf, np.array([0]), 8)
  assert t.cdf[0, 3] - t.cdf[0, 2] == 1


def test_quantization_is_kl_optimal_against_every_unit_move():
  # Separable convex objective: no improving unit move => global optimum.
  pmf = _laplace_pmf(4, 30, tail=1e-2, seed=1)
  t = tables_from_pmf(pmf, np.zeros(4, np.int64), 10)
  p = np.concatenate([pmf, 1 - pmf.sum(1, keepdims=True)], axis=1)
  for c, f in enumerate(_freqs(t)):
    f = f.astype(np.int64)
    base = _kl(p[c], f, 1024)
    for i, j in itertools.permutations(range(len(f)), 2):
      if f[j] > 1:
        g = f.copy()
        g[i] += 1
        g[j] -= 1
        assert _kl(p[c], g, 1024) >= base - 1e-12


def test_quantization_matches_brute_force_on_a_tiny_alphabet():
  p = np.array([0.6, 0.25, 0.1, 0.05])
  total = 16
  best = min(
      (f for f in itertools.product(range(1, total), repeat=4)
       if sum(f) == total),
      key=lambda f: _kl(p, np.array(f, float), total),
  )
  t = tables_from_pmf(p[None, :3], np.array([0]), 4)
  got = _freqs(t)[0]
  assert _kl(p, got.astype(float), total) == pytest.approx(
      _kl(p, np.array(best, float), total), abs=1e-12
  )


def test_tables_from_pmf_is_deterministic():
  pmf = _laplace_pmf(8, 40, seed=3)
  a = tables_from_pmf(pmf, np.arange(8), 16)
  b = tables_from_pmf(pmf.copy(), np.arange(8), 16)
  for x, y in zip(a[:3], b[:3]):
    np.testing.assert_array_equal(x, y)


def test_zero_bins_means_everything_escapes():
  t = tables_from_pmf(np.zeros((2, 0)), np.array([5, -5]), 3)
  assert t.cdf.shape == (2, 2) and np.all(t.cdf[:, 1] == 8)


@pytest.mark.parametrize(
    "pmf, offset, precision, match",
    [
        (np.ones((1, 16)) / 16, [0], 4, "frequency slots"),
        (np.array([[0.5, -0.1]]), [0], 8, "non-negative"),
        (np.array([[0.5, np.nan]]), [0], 8, "finite"),
        (np.array([[0.7, 0.7]]), [0], 8, "at most 1"),
        (np.array([[0.5, 0.5]]), [0, 1], 8, "offset"),
        (np.array([[0.5, 0.5]]), [2**31 - 1], 8, "int32"),
        (np.array([[0.5, 0.5]]), [0], 17, "precision"),
        (np.array([[0.5, 0.5]]), [0], 0, "precision"),
        (np.array([0.5, 0.5]), [0], 8, r"\[C >= 1, K\]"),
    ],
)
def test_tables_from_pmf_rejects_bad_input(pmf, offset, precision, match):
  with pytest.raises(ValueError, match=match):
    tables_from_pmf(pmf, np.array(offset), precision)


def _good():
  return tables_from_pmf(_laplace_pmf(3, 6), np.array([-3, 0, 3]), 12)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda t: t.cdf.__setitem__((1, 0), 1), "start at 0"),
        (lambda t: t.cdf.__setitem__((2, 3), t.cdf[2, 2]), "strictly"),
        (lambda t: t.cdf.__setitem__((0, 7), 4095), "2\\^precision"),
        (lambda t: t.cdf_length.__setitem__(1, 9), "cdf_length"),
        (lambda t: t.cdf_length.__setitem__(1, 1), "cdf_length"),
        (lambda t: t.offset.__setitem__(0, 2**31 - 3), "fit in int32"),
    ],
)
def test_validate_names_the_broken_rule(mutate, match):
  t = _good()
  mutate(t)
  with pytest.raises(ValueError, match=match):
    t.validate()


def test_validate_rejects_wrong_dtypes_and_precision():
  t = _good()
  with pytest.raises(TypeError, match="int32"):
    t._replace(cdf=t.cdf.astype(np.int64)).validate()
  with pytest.raises(TypeError, match="precision"):
    t._replace(precision=12.0).validate()
  with pytest.raises(ValueError, match="precision"):
    t._replace(precision=11).validate()


def test_padding_past_cdf_length_is_ignored():
  t = _good()
  cdf = np.concatenate([t.cdf, np.full((3, 4), -7, np.int32)], axis=1)
  cdf_length = t.cdf_length.copy()
  cdf_length[0] -= 1  # shorter row: its last valid entry must be 2^12
  cdf[0, cdf_length[0] - 1] = 4096
  CodingTables(cdf, cdf_length, t.offset, 12).validate()


def test_npz_round_trip_is_bit_exact(tmp_path):
  t = _good()
  path = tmp_path / "tables.npz"
  t.save_npz(path)
  for back in (CodingTables.load_npz(path), load_tables(path)):
    assert back.precision == t.precision and isinstance(back.precision, int)
    for x, y in zip(t[:3], back[:3]):
      assert x.dtype == y.dtype and np.array_equal(x, y)


def test_load_npz_missing_file_names_the_path(tmp_path):
  path = tmp_path / "nope.npz"
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    CodingTables.load_npz(path)


def test_load_npz_rejects_garbage_and_invalid_tables(tmp_path):
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="junk.npz"):
    CodingTables.load_npz(junk)
  t = _good()
  bad = tmp_path / "bad.npz"
  t.save_npz(bad)
  with np.load(bad) as npz:
    arrays = dict(npz)
  arrays["cdf"][0, 2] = arrays["cdf"][0, 1]
  with open(bad, "wb") as f:
    np.savez(f, **arrays)
  with pytest.raises(ValueError, match="bad.npz.*strictly"):
    CodingTables.load_npz(bad)
  other = tmp_path / "other.npz"
  np.savez(other, cdf=t.cdf)
  with pytest.raises(ValueError, match="missing"):
    CodingTables.load_npz(other)

