"""HECS-B bottleneck: shapes, rate, rounding at test, the norm bound, the
frozen teacher prefix, and symbols that survive the coder."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax import coding
from hecsb_jax.entropy.bottleneck import build_tables
from hecsb_jax.models import hecsb_bottleneck as hb

M, C_T = 4, 12


# Small on purpose: every new layer shape costs XLA compilations on CPU.
def _bottleneck(seed=0):
  acquisition = hb.ShallowAcquisition((8, 16), rngs=nnx.Rngs(seed))
  return hb.HecsbBottleneck(acquisition, 16, M, C_T, decoder_width=16,
                            rngs=nnx.Rngs(seed + 1))


def _images(n=3, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def test_shapes_and_bits_are_positive_and_finite():
  model = _bottleneck()
  x = _images()
  features, aux = model(x, jax.random.key(1), training=True)
  assert features.shape == (3, 8, 8, C_T) and features.dtype == jnp.float32
  assert aux["y"].shape == (3, 8, 8, M)
  assert aux["likelihoods"].shape == (3, 8, 8, M)
  assert aux["bits"].shape == (3,)
  assert np.all(np.isfinite(aux["bits"])) and np.all(aux["bits"] > 0)
  symbols = model.edge_symbols(x)
  assert symbols.shape == (3, 8, 8, M) and symbols.dtype == jnp.int32


def test_eval_mode_rounds_and_train_mode_adds_bounded_noise():
  model = _bottleneck()
  x = _images()
  model.eval()
  y_hat, aux = model.encode(x)
  np.testing.assert_array_equal(y_hat, jnp.round(aux["y"]))
  np.testing.assert_array_equal(y_hat, model.edge_symbols(x))
  features, _ = model(x)
  np.testing.assert_allclose(
      features, model.decode_symbols(model.edge_symbols(x)), rtol=1e-6)
  model.train()
  y_tilde, aux = model.encode(x, jax.random.key(2))
  noise = np.asarray(y_tilde - aux["y"])
  assert np.all(np.abs(noise) <= 0.5 + 1e-4)
  assert np.std(noise) > 0.2  # uniform noise, not rounding
  with pytest.raises(ValueError, match="rng"):
    model.encode(x)  # training without a noise key


def test_project_restores_the_frobenius_bound():
  model = _bottleneck()
  meas = model.measurement
  assert meas.bound == pytest.approx(np.sqrt(M * 16))
  norm = lambda: float(jnp.sqrt(jnp.sum(meas.kernel[...] ** 2)))
  assert norm() <= meas.bound * (1 + 1e-6)
  meas.kernel[...] = 10.0 * meas.kernel[...]
  model.project_()
  assert norm() == pytest.approx(meas.bound, rel=1e-5)
  inside = 0.5 * meas.kernel[...]
  meas.kernel[...] = inside
  model.project_()
  np.testing.assert_array_equal(meas.kernel[...], inside)


class _Tiny(nnx.Module):
  """A backbone with BatchNorm and one split point, "a" (stride 4)."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 6, (3, 3), strides=4, rngs=rngs)
    self.bn = nnx.BatchNorm(6, rngs=rngs)

  def features(self, x, until):
    assert until == "a"
    return self.bn(self.conv(x))


def test_teacher_prefix_keeps_stored_statistics_in_train_mode():
  teacher = _Tiny(nnx.Rngs(0))
  teacher.bn.mean[...] = jnp.full((6,), 0.3)
  teacher.bn.var[...] = jnp.full((6,), 2.0)
  teacher.eval()
  x = _images()
  expected = teacher.features(x, "a")
  model = hb.HecsbBottleneck(hb.TeacherPrefix(nnx.clone(teacher), "a"), 6,
                             M, 6, decoder_width=8, rngs=nnx.Rngs(1))
  model.train()
  np.testing.assert_array_equal(model.acquisition(x), expected)
  # ... and its statistics are not updated by the call.
  np.testing.assert_array_equal(model.acquisition.backbone.bn.mean[...],
                                teacher.bn.mean[...])


def test_edge_symbols_round_trip_through_the_coder():
  model = _bottleneck()
  model.eval()
  tables = build_tables(model.entropy)
  symbols = np.asarray(model.edge_symbols(_images(1)))
  data = coding.compress(symbols, tables)
  np.testing.assert_array_equal(coding.decompress(data, tables), symbols)


class _Identity(nnx.Module):
  def __call__(self, x):
    return x


def _anisotropic_features(c=C_T, seed=0):
  rng = np.random.default_rng(seed)
  mixing = np.linalg.qr(rng.normal(size=(c, c)))[0]
  scales = np.geomspace(4.0, 0.05, c)
  z = rng.normal(size=(3, 8, 8, c)) * scales
  return jnp.asarray((z @ mixing.T).astype(np.float32))


def test_principal_directions_are_the_top_eigenvectors_in_order():
  a = _anisotropic_features()
  d = np.asarray(hb.principal_directions(a, M))
  flat = np.asarray(a).reshape(-1, C_T)
  u, s, _ = np.linalg.svd(flat.T @ flat)
  np.testing.assert_allclose(d.T @ d, np.eye(M), atol=1e-5)
  # The same subspace and order as numpy's (up to each column's sign).
  np.testing.assert_allclose(np.abs(d.T @ u[:, :M]), np.eye(M), atol=1e-3)
  energy = np.sum((flat @ d) ** 2, axis=0)
  assert np.all(np.diff(energy) < 0)
  # Signs are fixed: the largest entry of each column is positive.
  assert np.all(d[np.abs(d).argmax(0), np.arange(M)] > 0)
  with pytest.raises(ValueError, match="1 <= m <= C"):
    hb.principal_directions(a, C_T + 1)


def test_principal_start_makes_the_decoder_the_best_rank_m_linear_code():
  a = _anisotropic_features()
  model = hb.HecsbBottleneck(_Identity(), C_T, M, C_T, decoder_width=8,
                             measurement_init_std=0.05, decoder_skip=True,
                             rngs=nnx.Rngs(0))
  # The skip path starts at zero: a fresh model is the plain decoder.
  assert not np.any(model.decoder.skip.kernel[...])
  d = hb.principal_directions(a, M)
  model.start_at_principal_directions_(d)
  w = np.asarray(model.measurement.kernel[...])[0, 0]
  # Rows of W along the directions, at the random start's row norm.
  np.testing.assert_allclose(w, model.row_norm * np.asarray(d), rtol=1e-6)
  y = model.measurement(a)
  linear = model.decoder.skip(model.decoder.input_scale * y)
  flat = np.asarray(a).reshape(-1, C_T)
  best = flat @ np.asarray(d) @ np.asarray(d).T
  np.testing.assert_allclose(np.asarray(linear).reshape(-1, C_T), best,
                             atol=1e-4)
  # The whole decoder adds its (small) nonlinear part to that.
  features = model.decode(y)
  assert features.shape == a.shape


def test_principal_start_is_refused_without_the_linear_path_or_shape():
  a = _anisotropic_features()
  d = hb.principal_directions(a, M)
  plain = hb.HecsbBottleneck(_Identity(), C_T, M, C_T, decoder_width=8,
                             rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="decoder_skip"):
    plain.start_at_principal_directions_(d)
  skip = hb.HecsbBottleneck(_Identity(), C_T, M, C_T, decoder_width=8,
                            decoder_skip=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\[C_a, m\]"):
    skip.start_at_principal_directions_(d[:, :M - 1])
