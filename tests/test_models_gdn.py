"""GDN / IGDN: the formula by hand, the nonnegative reparameterization, and
the bounds it keeps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.models import gdn as gdn_lib


def _set(layer, beta, gamma):
  layer.beta[...] = gdn_lib.nonnegative_init(jnp.asarray(beta, jnp.float32))
  layer.gamma[...] = gdn_lib.nonnegative_init(
      jnp.asarray(gamma, jnp.float32))


def test_default_gdn_matches_hand_computation():
  # beta = 1, gamma = 0.1 I: y_i = x_i / sqrt(1 + 0.1 x_i²).
  layer = gdn_lib.GDN(2)
  y = layer(jnp.array([[2.0, -1.0]]))
  np.testing.assert_allclose(
      y, [[2.0 / np.sqrt(1.4), -1.0 / np.sqrt(1.1)]], rtol=1e-6)


@pytest.mark.parametrize("inverse", [False, True])
def test_cross_channel_terms_match_hand_computation(inverse):
  layer = gdn_lib.GDN(2, inverse=inverse)
  # gamma[i, j] weighs x_j² in the norm of output i.
  _set(layer, [0.5, 2.0], [[0.2, 0.3], [0.1, 0.0]])
  y = layer(jnp.array([[1.0, 2.0]]))
  norm = np.array([0.5 + 0.2 * 1 + 0.3 * 4, 2.0 + 0.1 * 1 + 0.0 * 4])
  expected = np.array([1.0, 2.0]) * (np.sqrt(norm) if inverse
                                     else 1 / np.sqrt(norm))
  np.testing.assert_allclose(y, [expected], rtol=1e-5)


def test_output_is_x_over_sqrt_beta_plus_gamma_x_squared():
  c = 4
  layer = gdn_lib.GDN(c)
  keys = jax.random.split(jax.random.key(0), 3)
  # Move the free parameters away from their initial (diagonal) values.
  layer.beta[...] = layer.beta[...] + 0.5 * jax.random.uniform(keys[0], (c,))
  layer.gamma[...] = 0.6 * jax.random.uniform(keys[1], (c, c))
  x = jax.random.normal(keys[2], (2, 3, 3, c))
  beta = np.asarray(layer.beta_value(), np.float64)
  gamma = np.asarray(layer.gamma_value(), np.float64)
  xs = np.asarray(x, np.float64)
  norm = beta + np.einsum("bhwj,ij->bhwi", xs**2, gamma)
  y = layer(x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(y, xs / np.sqrt(norm), rtol=1e-5, atol=1e-6)
  inverse = gdn_lib.IGDN(c)
  inverse.beta[...] = layer.beta[...]
  inverse.gamma[...] = layer.gamma[...]
  np.testing.assert_allclose(inverse(x), xs * np.sqrt(norm), rtol=1e-5,
                             atol=1e-6)


def test_reparameterization_round_trips_and_keeps_the_minimums():
  layer = gdn_lib.GDN(3, beta_min=1e-4)
  np.testing.assert_allclose(layer.beta_value(), np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(layer.gamma_value(), 0.1 * np.eye(3),
                             atol=1e-9)
  # Free parameters pushed below zero still give beta >= beta_min, gamma
  # >= 0 (the division stays bounded).
  layer.beta[...] = -jnp.ones(3)
  layer.gamma[...] = -jnp.ones((3, 3))
  np.testing.assert_allclose(layer.beta_value(), np.full(3, 1e-4),
                             rtol=1e-4)
  np.testing.assert_allclose(layer.gamma_value(), np.zeros((3, 3)),
                             atol=1e-12)
  y = layer(jnp.full((1, 3), 1e-2))
  np.testing.assert_allclose(y, 1e-2 / np.sqrt(1e-4), rtol=1e-3)


def test_gradient_reaches_parameters_below_their_bound():
  # lower_bound passes the gradient that would raise the parameter back.
  layer = gdn_lib.GDN(2)
  layer.beta[...] = -jnp.ones(2)

  def loss(beta_free):
    return -jnp.sum(gdn_lib.nonnegative_value(beta_free, 1e-6))

  g = jax.grad(loss)(layer.beta[...])
  assert np.all(np.asarray(g) < 0)  # descent raises beta_free


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="beta_min"):
    gdn_lib.GDN(2, beta_min=0.0)
  with pytest.raises(ValueError, match="num_channels"):
    gdn_lib.GDN(0)
