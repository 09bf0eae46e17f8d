"""Tests for the PCA measurement / linear reconstruction baseline."""

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA

from hecsb_jax.cs import pca as pca_lib

N_PIX = 784


def _low_rank_data(num=600, rank=8, seed=0):
  """Data near a rank-`rank` affine subspace of R^784, with a small floor."""
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.standard_normal((N_PIX, rank)))
  scales = np.linspace(3.0, 0.5, rank)
  z = rng.standard_normal((num, rank)) * scales
  x = 0.5 + z @ basis.T + 0.01 * rng.standard_normal((num, N_PIX))
  return x.astype(np.float32)


@pytest.fixture(scope="module")
def data():
  return _low_rank_data()


@pytest.fixture(scope="module")
def singular_values(data):
  x64 = data.astype(np.float64)
  return np.linalg.svd(x64 - x64.mean(0), compute_uv=False)


@pytest.mark.parametrize("m", [1, 12])
def test_components_are_orthonormal(data, m):
  u = np.asarray(pca_lib.fit_pca(data, m).components, np.float64)
  assert u.shape == (N_PIX, m)
  np.testing.assert_allclose(u.T @ u, np.eye(m), atol=1e-5)


def test_uncentred_fit_is_the_second_moments_top_subspace(data):
  fitted = pca_lib.fit_pca(data, 3, center=False)
  assert not np.any(np.asarray(fitted.mean))
  x64 = data.astype(np.float64)
  # The data's mean (0.5 per pixel) is its strongest uncentred direction.
  top = np.linalg.svd(x64, full_matrices=False)[2][:3].T
  u = np.asarray(fitted.components, np.float64)
  np.testing.assert_allclose(np.abs(np.sum(u * top, axis=0)), 1.0, atol=1e-4)
  mean_dir = x64.mean(0) / np.linalg.norm(x64.mean(0))
  assert abs(u[:, 0] @ mean_dir) > 0.99


def test_components_match_sklearn_up_to_sign(data):
  u = np.asarray(pca_lib.fit_pca(data, 6).components, np.float64)
  ref = SkPCA(n_components=6, svd_solver="full").fit(data).components_.T
  np.testing.assert_allclose(np.abs(np.sum(u * ref, axis=0)), 1.0, atol=1e-4)


def test_sign_convention_makes_largest_entry_positive(data):
  u = np.asarray(pca_lib.fit_pca(data, 5).components)
  assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(5)] > 0)


@pytest.mark.parametrize("m", [3, 8, 20])
def test_noiseless_error_equals_discarded_variance(data, singular_values, m):
  p = pca_lib.fit_pca(data, m)
  w = np.asarray(pca_lib.pca_measurement_matrix(p))
  x_hat = np.asarray(pca_lib.pca_reconstruct(p, data @ w.T), np.float64)
  mean_error = np.mean(np.sum((data - x_hat) ** 2, axis=-1))
  # Another way: the singular values s of the centered data; the mean
  # squared residual per image is the sum of the discarded s^2, over N.
  expected = np.sum(singular_values[m:] ** 2) / data.shape[0]
  np.testing.assert_allclose(mean_error, expected, rtol=2e-3)


@pytest.mark.parametrize("m", [1, 10, 100])
def test_measurement_frobenius_norm_is_sqrt_m_n(m):
  x = np.random.default_rng(1).uniform(size=(120, N_PIX)).astype(np.float32)
  w = np.asarray(pca_lib.pca_measurement_matrix(pca_lib.fit_pca(x, m)))
  assert w.shape == (m, N_PIX)
  np.testing.assert_allclose(np.linalg.norm(w), np.sqrt(m * N_PIX), rtol=1e-5)


def test_noise_adds_sigma_squared_m_over_n(data):
  # x_hat(y + sigma eps) - x_hat(y) = sigma U eps / sqrt(n): its expected
  # squared norm is sigma^2 m / n.
  m, sigma = 12, 0.5
  p = pca_lib.fit_pca(data, m)
  w = np.asarray(pca_lib.pca_measurement_matrix(p))
  y = data @ w.T
  eps = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
  diff = np.asarray(pca_lib.pca_reconstruct(p, y + sigma * eps)
                    - pca_lib.pca_reconstruct(p, y))
  measured = np.mean(np.sum(diff.astype(np.float64) ** 2, axis=-1))
  # 600 draws of a chi^2_12 / 12 average: relative std ~ 1.7 %.
  np.testing.assert_allclose(measured, sigma**2 * m / N_PIX, rtol=0.05)


def test_bad_input_raises(data):
  with pytest.raises(ValueError, match="m must be in"):
    pca_lib.fit_pca(data[:10], 11)
  with pytest.raises(ValueError, match="train_x must be"):
    pca_lib.fit_pca(data[0], 1)
  with pytest.raises(ValueError, match=r"y must be \[B, 4\]"):
    pca_lib.pca_reconstruct(pca_lib.fit_pca(data, 4), np.zeros((2, 3)))
