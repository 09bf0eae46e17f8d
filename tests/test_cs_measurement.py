"""Tests of the learned measurement operator and its norm bound."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax.cs.measurement import (
    MeasurementEncoder, frobenius_bound, project_to_frobenius_ball)
from hecsb_jax.models.uae import UncertaintyAutoencoder, uae_loss
from hecsb_jax.train.trainer import FitConfig, fit


def test_projection_lands_on_the_ball_and_keeps_interior_points():
  w = jax.random.normal(jax.random.key(0), (5, 20)) * 10
  p = project_to_frobenius_ball(w, 3.0)
  np.testing.assert_allclose(jnp.linalg.norm(p), 3.0, rtol=1e-6)
  small = w / jnp.linalg.norm(w)
  np.testing.assert_array_equal(project_to_frobenius_ball(small, 3.0), small)


def test_noise_has_the_configured_scale():
  enc = MeasurementEncoder(16, 8, noise_std=0.1, rngs=nnx.Rngs(0))
  x = jnp.ones((4000, 16))
  y, aux = enc(x, jax.random.key(1))
  np.testing.assert_allclose(jnp.std(y - aux["y_clean"]), 0.1, rtol=0.03)
  y0, _ = enc(x, None)
  np.testing.assert_array_equal(y0, aux["y_clean"])


def test_norm_bound_holds_after_training():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(400, 32)).astype(np.float32)
  model = UncertaintyAutoencoder(32, 6, hidden=(16,), rngs=nnx.Rngs(0))
  # A large learning rate pushes W outward hard: only the projection
  # keeps it inside.
  fit(model, uae_loss, x[:300], x[300:],
      FitConfig(epochs=3, batch_size=50, learning_rate=0.5),
      project_fn=lambda m: m.project_(), progress=False)
  norm = float(jnp.linalg.norm(model.encoder.w[...]))
  assert norm <= frobenius_bound(6, 32) * (1 + 1e-5)
  assert norm > 0.5 * frobenius_bound(6, 32)
