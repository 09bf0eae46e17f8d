"""PCA as a linear measurement and linear reconstruction (the linear floor).

The top-m principal subspace of the training set gives the best rank-m affine
encoder/decoder pair under squared error (Eckart-Young). As a compressed
sensing baseline it is measured like every other method, with the measurement
scaled to the same Frobenius norm as the Gaussian A and the learned encoder:

  x [B, 784] --W = sqrt(n) U^T--> W x + sigma eps [B, m]
             --mean + U (y - W mean) / sqrt(n)--> x_hat [B, 784]

With sigma = 0 the reconstruction is the orthogonal projection of x - mean
onto span(U), plus the mean.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class PCA(NamedTuple):
  """A fitted principal subspace.

  Attributes:
    mean: [n] float32 training mean.
    components: [n, m] float32 orthonormal columns U, by decreasing variance.
    m: number of components.
  """

  mean: jnp.ndarray
  components: jnp.ndarray
  m: int


def fit_pca(train_x, m: int, *, center: bool = True) -> PCA:
  """Fits the top-m principal components of a training set.

  The eigendecomposition is of the float64 scatter matrix X_c^T X_c, whose
  eigenvectors are the right singular vectors of the centered data X_c: for
  n = 784 and N = 50k this is much cheaper than an SVD of X_c, and float64
  keeps it accurate. Each component's sign makes its largest-magnitude entry
  positive, so the result does not depend on the LAPACK build.

  Args:
    train_x: [N, n] float training images.
    m: number of components, 1 <= m <= min(N, n).
    center: subtract the mean first; False fits the uncentred second
      moment (mean then zero), the best subspace for a code without an
      offset, e.g. a bias-free measurement.

  Returns:
    The fitted PCA.
  """
  x = np.asarray(train_x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"train_x must be [N, n], got shape {x.shape}")
  num, n = x.shape
  if not 1 <= m <= min(num, n):
    raise ValueError(f"m must be in [1, {min(num, n)}], got {m}")
  mean = x.mean(axis=0) if center else np.zeros(n)
  xc = x - mean
  eigvals, eigvecs = np.linalg.eigh(xc.T @ xc)
  # eigh sorts ascending; take the m largest, largest first.
  u = eigvecs[:, ::-1][:, :m]
  pivot = np.argmax(np.abs(u), axis=0)
  u = u * np.sign(u[pivot, np.arange(m)])
  return PCA(
      mean=jnp.asarray(mean, jnp.float32),
      components=jnp.asarray(u, jnp.float32),
      m=m,
  )


def pca_measurement_matrix(pca: PCA) -> jnp.ndarray:
  """The measurement matrix W = sqrt(n) U^T.

  Its Frobenius norm is sqrt(m n), the expected norm of an m x n matrix with
  i.i.d. N(0, 1) entries and the bound put on the learned encoder, so at the
  same noise sigma no method gains by scale.

  Args:
    pca: the fitted PCA.

  Returns:
    [m, n] float32 W.
  """
  n = pca.components.shape[0]
  return jnp.sqrt(jnp.float32(n)) * pca.components.T


def pca_reconstruct(pca: PCA, y) -> jnp.ndarray:
  """Linear (affine) reconstruction from y = W x + sigma eps.

  Not clipped: this is the linear decoder the baseline stands for.

  Args:
    pca: the fitted PCA.
    y: [B, m] float32 measurements made with pca_measurement_matrix(pca).

  Returns:
    [B, n] float32 x_hat = mean + U (y - W mean) / sqrt(n).
  """
  y = jnp.asarray(y, jnp.float32)
  if y.ndim != 2 or y.shape[1] != pca.m:
    raise ValueError(f"y must be [B, {pca.m}], got shape {y.shape}")
  w = pca_measurement_matrix(pca)
  n = pca.components.shape[0]
  coeffs = (y - w @ pca.mean) / jnp.sqrt(jnp.float32(n))
  return pca.mean + coeffs @ pca.components.T
