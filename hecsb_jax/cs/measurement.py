"""Learned linear measurements with a Gaussian channel: y = W x + sigma * eps.

The operator is a plain matrix without bias, as in statistical compressed
sensing (Grover & Ermon, "Uncertainty Autoencoders", AISTATS 2019). A learned
W could beat the noise simply by growing, so its scale is bounded: the
Frobenius norm is held at most at sqrt(m * n), the expected norm of the
i.i.d. N(0, 1) matrix that the LASSO/CSGM baselines measure with. Training
enforces the bound by projection after every step (`project_`).
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp


def frobenius_bound(num_measurements: int, num_features: int) -> float:
  """sqrt(m * n): E||A||_F for A with i.i.d. N(0, 1) entries (to O(1/mn))."""
  return math.sqrt(num_measurements * num_features)


def project_to_frobenius_ball(w: jax.Array, bound: float) -> jax.Array:
  """Euclidean projection of ``w`` onto {||w||_F <= bound}."""
  norm = jnp.sqrt(jnp.sum(jnp.square(w)))
  return w * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-12))


class MeasurementEncoder(nnx.Module):
  """y = W x + sigma * eps with W: [m, n], ||W||_F <= sqrt(m n)."""

  def __init__(
      self,
      num_features: int,
      num_measurements: int,
      *,
      noise_std: float = 0.1,
      rngs: nnx.Rngs,
  ):
    self.num_features = num_features
    self.num_measurements = num_measurements
    self.noise_std = noise_std
    self.bound = frobenius_bound(num_measurements, num_features)
    # Start from the baselines' random Gaussian operator: on the bound, and a
    # good sensing matrix already.
    self.w = nnx.Param(
        jax.random.normal(rngs.params(), (num_measurements, num_features))
    )

  def __call__(
      self, x: jax.Array, rng: jax.Array | None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Measures ``x``.

    Args:
      x: [B, n] float32 signals.
      rng: key for the channel noise; None measures noiselessly.

    Returns:
      (y, aux): y [B, m] noisy measurements; aux holds the noiseless
      ``y_clean``.
    """
    y_clean = x @ self.w[...].T
    if rng is None:
      return y_clean, {"y_clean": y_clean}
    eps = jax.random.normal(rng, y_clean.shape, y_clean.dtype)
    return y_clean + self.noise_std * eps, {"y_clean": y_clean}

  def project_(self) -> None:
    """Projects W back onto the Frobenius ball (in place)."""
    self.w[...] = project_to_frobenius_ball(self.w[...], self.bound)
