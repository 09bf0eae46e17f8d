"""Tests for the batched FISTA LASSO solver against scikit-learn."""

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from hecsb_jax.cs import lasso

N = 784


def _problem(m, num_images=4, seed=0, sigma=0.1):
  """Sparse images in [0, 1] measured by an i.i.d. N(0, 1) matrix."""
  rng = np.random.default_rng(seed)
  x = np.zeros((num_images, N), np.float32)
  for b in range(num_images):
    idx = rng.choice(N, size=40, replace=False)
    x[b, idx] = rng.uniform(0.2, 1.0, size=40)
  A = rng.standard_normal((m, N)).astype(np.float32)
  y = x @ A.T + sigma * rng.standard_normal((num_images, m)).astype(np.float32)
  return A, y, x


def _sklearn(A, y, lam):
  A64 = A.astype(np.float64)
  return np.stack([
      Lasso(alpha=lam, fit_intercept=False, tol=1e-8, max_iter=100_000)
      .fit(A64, yb.astype(np.float64))
      .coef_
      for yb in y
  ])


@pytest.mark.parametrize("m,lam", [(25, 0.1), (100, 0.1), (100, 0.01)])
def test_solution_matches_sklearn_lasso(m, lam):
  A, y, _ = _problem(m)
  x, _ = lasso.lasso_solve(A, y, lam, num_iters=20_000, tol=1e-7)
  x = np.asarray(x, np.float64)
  ref = _sklearn(A, y, lam)
  obj = np.asarray(lasso.lasso_objective(A.astype(np.float64),
                                         y.astype(np.float64), x, lam))
  obj_ref = np.asarray(lasso.lasso_objective(A.astype(np.float64),
                                             y.astype(np.float64), ref, lam))
  np.testing.assert_allclose(obj, obj_ref, rtol=1e-5)
  # The minimiser is unique (Gaussian A is in general position), but it is
  # found in float32 and its support block A_S^T A_S can be ill-conditioned
  # when |S| nears m, which turns a ~1e-7 relative objective gap into
  # coefficient errors of ~1e-4..1e-3 (entries here are O(1)).
  np.testing.assert_allclose(x, ref, atol=2e-3)
  # The same support: every clearly nonzero reference entry has our sign.
  big = np.abs(ref) > 1e-2
  assert np.array_equal(np.sign(x[big]), np.sign(ref[big]))


def test_objective_uses_sklearn_scaling():
  # sklearn's Lasso minimises 1/(2 n_samples)||y - Xw||^2 + alpha ||w||_1;
  # with n_samples = m rows of A, check the value at a known point.
  A = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], np.float32)
  y = np.array([[1.0, 1.0, 1.0]], np.float32)
  x = np.array([[1.0, -1.0]], np.float32)
  # r = y - A x = [2, 2, 2]; 1/(2*3) * 12 = 2; lam * |x|_1 = 0.5 * 2 = 1.
  np.testing.assert_allclose(lasso.lasso_objective(A, y, x, 0.5), [3.0])


def test_large_lambda_gives_zero():
  A, y, _ = _problem(25)
  lam_max = np.max(np.abs(y @ A / 25))
  x, _ = lasso.lasso_solve(A, y, 1.01 * lam_max)
  assert np.all(np.asarray(x) == 0.0)


def test_recover_is_clipped_to_unit_interval():
  A, y, _ = _problem(50, sigma=1.0)
  x_hat = np.asarray(lasso.lasso_recover(A, y, 1e-3))
  assert x_hat.shape == (4, N) and x_hat.dtype == np.float32
  assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0
  raw, _ = lasso.lasso_solve(A, y, 1e-3)
  assert np.asarray(raw).min() < 0.0  # So the clip did something.


def test_per_image_lambda_equals_separate_solves():
  A, y, _ = _problem(25)
  # The stopping test is over the whole batch, so fix the iteration count to
  # compare like with like; batching changes float32 summation order only.
  kw = dict(num_iters=2000, tol=0.0)
  both = np.asarray(
      lasso.lasso_recover(A, y[:2], np.array([0.01, 0.5]), **kw))
  a = np.asarray(lasso.lasso_recover(A, y[:1], 0.01, **kw))
  b = np.asarray(lasso.lasso_recover(A, y[1:2], 0.5, **kw))
  np.testing.assert_allclose(both, np.concatenate([a, b]), atol=1e-4)


def test_select_lambda_minimises_validation_error():
  A, y, x = _problem(50, num_images=6, seed=1)
  grid = [1e-3, 1e-2, 1e-1, 1.0]
  chosen = lasso.select_lasso_lambda(A, y, x, grid)
  errors = [
      np.mean(np.sum((x - np.asarray(lasso.lasso_recover(A, y, lam))) ** 2,
                     axis=-1))
      for lam in grid
  ]
  assert chosen == pytest.approx(grid[int(np.argmin(errors))])
  # Large lam shrinks everything to zero, which is far from these images.
  assert chosen < 1.0


def test_bad_shapes_raise_clear_errors():
  A, y, x = _problem(10)
  with pytest.raises(ValueError, match="y \\[B, m\\]"):
    lasso.lasso_recover(A, y[:, :5], 0.1)
  with pytest.raises(ValueError, match="lam must be"):
    lasso.lasso_recover(A, y, -0.1)
  with pytest.raises(ValueError, match="x_val must have shape"):
    lasso.select_lasso_lambda(A, y, x[:2])
  with pytest.raises(ValueError, match="grid is empty"):
    lasso.select_lasso_lambda(A, y, x, [])
