"""Tests for CSGM latent search (Bora et al. 2017)."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.cs import csgm
from hecsb_jax.models.vae import VAE

K, N = 5, 100  # latent size and signal size of the toy generator


def _toy_generator(seed=0):
  """A fixed smooth map z [..., K] -> x [..., N] in (0, 1)."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.standard_normal((K, N)) / np.sqrt(K), jnp.float32)
  b = jnp.asarray(rng.standard_normal(N) * 0.5, jnp.float32)
  return lambda z: jax.nn.sigmoid(z @ w + b)


def _measure(x, m, sigma, seed):
  rng = np.random.default_rng(seed)
  A = rng.standard_normal((m, x.shape[1])).astype(np.float32)
  eps = rng.standard_normal((x.shape[0], m)).astype(np.float32)
  return A, np.asarray(x) @ A.T + sigma * eps


def test_recovers_signal_in_range_of_generator():
  g = _toy_generator()
  z0 = jax.random.normal(jax.random.key(1), (8, K))
  x = np.asarray(g(z0))
  A, y = _measure(x, m=20, sigma=0.01, seed=2)
  x_hat = np.asarray(csgm.csgm_recover(
      g, A, y, key=jax.random.key(3), num_restarts=4, num_steps=300,
      learning_rate=0.05, z_reg=0.01, latent_dim=K,
  ))
  error = np.mean(np.sum((x_hat - x) ** 2, -1))
  mean_guess = np.mean(np.sum((x - x.mean(0)) ** 2, -1))
  assert x_hat.shape == x.shape
  assert error < 1e-2 * mean_guess, (error, mean_guess)


def test_best_restart_is_argmin_of_measurement_loss():
  # No optimization steps: the search returns its random starts, so the
  # selection can be recomputed by hand. The huge z_reg makes the penalized
  # objective rank the starts differently, and the ground truth too.
  g = _toy_generator()
  x = np.asarray(g(jax.random.normal(jax.random.key(4), (16, K))))
  A, y = _measure(x, m=10, sigma=0.1, seed=5)
  x_hat, aux = csgm.csgm_search(
      g, A, y, key=jax.random.key(6), num_restarts=10, num_steps=0,
      z_reg=1e4, latent_dim=K,
  )
  z = np.asarray(aux["z"])
  candidates = np.asarray(g(z))  # [B, R, N]
  measurement = np.sum((candidates @ A.T - y[:, None, :]) ** 2, axis=-1)
  np.testing.assert_allclose(aux["measurement_loss"], measurement, rtol=1e-4)
  best = np.argmin(measurement, axis=1)
  np.testing.assert_array_equal(aux["best_restart"], best)
  np.testing.assert_allclose(
      x_hat, candidates[np.arange(16), best], atol=1e-6)
  objective = measurement + 1e4 * np.sum(z**2, -1)
  truth = np.sum((candidates - x[:, None, :]) ** 2, axis=-1)
  # So that the checks above could tell the three rules apart.
  assert np.any(np.argmin(objective, 1) != best)
  assert np.any(np.argmin(truth, 1) != best)


def test_vae_module_and_bound_decode_agree():
  vae = VAE(N, latent_dim=K, hidden=(16, 16), rngs=nnx.Rngs(0))
  x = np.random.default_rng(10).uniform(size=(3, N)).astype(np.float32)
  A, y = _measure(x, m=6, sigma=0.1, seed=11)
  kw = dict(key=jax.random.key(12), num_restarts=2, num_steps=20)
  a = csgm.csgm_recover(vae, A, y, **kw)
  b = csgm.csgm_recover(vae.decode, A, y, **kw)
  np.testing.assert_allclose(a, b, atol=1e-6)
  assert a.shape == (3, N)
  assert float(jnp.min(a)) >= 0.0 and float(jnp.max(a)) <= 1.0


def test_bad_input_raises():
  g = _toy_generator()
  A = np.zeros((4, N), np.float32)
  with pytest.raises(ValueError, match="latent_dim"):
    csgm.csgm_recover(g, A, np.zeros((2, 4)), key=jax.random.key(0))
  with pytest.raises(ValueError, match="y \\[B, m\\]"):
    csgm.csgm_recover(g, A, np.zeros((2, 3)), key=jax.random.key(0),
                      latent_dim=K)
  with pytest.raises(TypeError, match="generator"):
    csgm.csgm_recover(3, A, np.zeros((2, 4)), key=jax.random.key(0),
                      latent_dim=K)
