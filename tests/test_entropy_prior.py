"""Tests for hecsb_jax.entropy.prior (the factorized density)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hecsb_jax.entropy import prior as prior_lib

C = 5


def _random_prior(seed: int) -> prior_lib.FactorizedPrior:
  """A prior with non-trivial parameters (not just the symmetric init)."""
  p = prior_lib.FactorizedPrior(C, init_scale=5.0, rngs=nnx.Rngs(seed))
  rs = np.random.default_rng(seed)
  for group in (p.matrices, p.biases, p.factors):
    for param in group:
      param[...] = param[...] + rs.normal(size=param.shape).astype(np.float32)
  return p


def _data(n: int, seed: int) -> np.ndarray:
  """[n, C] float32: Laplace channels of various scales and one bimodal."""
  rs = np.random.default_rng(seed)
  y = rs.laplace(0.0, [0.4, 1.0, 3.0, 8.0, 1.0], size=(n, C))
  side = rs.random(n) < 0.5
  y[:, 4] = np.where(side, rs.normal(-4.0, 1.0, n), rs.normal(5.0, 1.5, n))
  return y.astype(np.float32)


def _noisy_density(t: np.ndarray) -> np.ndarray:
  """True density of the data of `_data` plus U(-1/2, 1/2): F(t+½) − F(t−½)."""
  erf = np.frompyfunc(math.erf, 1, 1)

  def laplace_cdf(x, b):
    half_tail = 0.5 * np.exp(-np.abs(x) / b)
    return np.where(x < 0, half_tail, 1.0 - half_tail)

  def normal_cdf(x, mu, sigma):
    return 0.5 * (1.0 + erf((x - mu) / (sigma * math.sqrt(2))).astype(float))

  def cdf(x):
    out = np.empty_like(x, dtype=np.float64)
    for c, b in enumerate([0.4, 1.0, 3.0, 8.0]):
      out[:, c] = laplace_cdf(x[:, c], b)
    out[:, 4] = 0.5 * normal_cdf(x[:, 4], -4.0, 1.0) + 0.5 * normal_cdf(
        x[:, 4], 5.0, 1.5
    )
    return out

  return cdf(t + 0.5) - cdf(t - 0.5)


def _noisy_bits(prior, y, key):
  """−log2 of the prior's likelihood at y + U(−½, ½), [N, C], and the noise."""
  u = jax.random.uniform(key, y.shape, minval=-0.5, maxval=0.5)
  return np.asarray(-jnp.log2(prior.likelihood(y + u))), np.asarray(u)


def test_cdf_is_monotone_from_zero_to_one():
  p = _random_prior(1)
  y = np.linspace(-300.0, 300.0, 4001)[:, None] * np.ones(C)
  params = p.numpy_params()
  cdf = 1.0 / (1.0 + np.exp(-prior_lib.cdf_logits(y, xp=np, **params)))
  assert np.all(np.diff(cdf, axis=0) >= 0.0)
  # Strictly increasing where it is not saturated in float64.
  inner = (cdf[1:] > 1e-12) & (cdf[1:] < 1.0 - 1e-12)
  assert np.all(np.diff(cdf, axis=0)[inner] > 0.0)
  np.testing.assert_allclose(cdf[0], 0.0, atol=1e-6)
  np.testing.assert_allclose(cdf[-1], 1.0, atol=1e-6)


def test_jax_and_numpy_paths_agree():
  p = _random_prior(2)
  y = np.random.default_rng(0).normal(0, 10, (64, C))
  jax_logits = p.logits_cumulative(jnp.asarray(y, jnp.float32))
  np_logits = prior_lib.cdf_logits(y, xp=np, **p.numpy_params())
  np.testing.assert_allclose(jax_logits, np_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 3])
def test_pmf_over_integers_sums_to_one(seed):
  p = _random_prior(seed)
  k = jnp.arange(-3000.0, 3001.0)[:, None] * jnp.ones(C)
  total = jnp.sum(p.likelihood(k), axis=0)
  np.testing.assert_allclose(total, 1.0, atol=1e-3)


@pytest.mark.parametrize("y", [15.0, -15.0])
def test_likelihood_is_accurate_in_the_tails(y):
  # Without the sign flip, sigmoid(u) − sigmoid(l) is a difference of two
  # numbers near 1 in float32 (spacing 6e-8), so masses near 1e-6 would lose
  # most of their digits; the flip keeps them to float32 relative accuracy.
  p = prior_lib.FactorizedPrior(C, init_scale=1.0, rngs=nnx.Rngs(0))
  y = np.full((1, C), y)
  got = np.asarray(p.likelihood(jnp.asarray(y, jnp.float32)))
  params = p.numpy_params()
  lower = prior_lib.cdf_logits(y - 0.5, xp=np, **params)
  upper = prior_lib.cdf_logits(y + 0.5, xp=np, **params)
  want = prior_lib.interval_probability(lower, upper, xp=np)
  assert np.all(want > 1e-8) and np.all(want < 1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-3)


def test_likelihood_floor_still_passes_gradient_towards_data():
  p = prior_lib.FactorizedPrior(C, init_scale=1.0, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(p, nnx.Param)
  # Here the true mass is ~1e-13, below the 1e-9 floor, but its derivative
  # is still representable in float32.
  y = jnp.full((1, C), 30.0)

  def bits(params, floor):
    prior = nnx.merge(graphdef, params)
    lower = prior.logits_cumulative(y - 0.5)
    upper = prior.logits_cumulative(y + 0.5)
    like = floor(prior_lib.interval_probability(lower, upper),
                 prior_lib.LIKELIHOOD_BOUND)
    return -jnp.sum(jnp.log2(like))

  assert float(bits(params, prior_lib.lower_bound)) == pytest.approx(
      -C * np.log2(prior_lib.LIKELIHOOD_BOUND), rel=1e-5
  )
  grad = jax.jit(jax.grad(bits), static_argnums=1)
  norm = optax.tree.norm(grad(params, prior_lib.lower_bound))
  # A plain maximum blocks the gradient: the fit could never recover.
  plain = optax.tree.norm(grad(params, jnp.maximum))
  assert float(plain) == 0.0
  assert np.isfinite(norm) and norm > 0.0
  # And the same gradient as the likelihood itself gets from its own module.
  like_grads = jax.jit(jax.grad(
      lambda q: -jnp.sum(jnp.log2(nnx.merge(graphdef, q).likelihood(y)))
  ))(params)
  np.testing.assert_allclose(optax.tree.norm(like_grads), norm, rtol=1e-5)


def test_fitting_samples_lowers_bits_to_near_the_true_noisy_entropy():
  train, held_out = _data(8192, 0), _data(8192, 1)
  p = prior_lib.FactorizedPrior(C, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(p, nnx.Param)
  tx = optax.adam(1e-2)

  def loss(params, y, key):
    u = jax.random.uniform(key, y.shape, minval=-0.5, maxval=0.5)
    like = nnx.merge(graphdef, params).likelihood(y + u)
    return -jnp.mean(jnp.log2(like))

  @jax.jit
  def step(params, opt_state, y, key):
    g = jax.grad(loss)(params, y, key)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  key = jax.random.key(0)
  before = np.mean(_noisy_bits(p, jnp.asarray(held_out), key)[0])
  opt_state = tx.init(params)
  rs = np.random.default_rng(0)
  for i in range(400):
    batch = jnp.asarray(train[rs.integers(0, len(train), 256)])
    key_i = jax.random.fold_in(key, i)
    params, opt_state = step(params, opt_state, batch, key_i)
  after, u = _noisy_bits(nnx.merge(graphdef, params), jnp.asarray(held_out),
                        key)
  # The cross-entropy of the true density of y + u on the same draws: no
  # model beats it in expectation (Gibbs), and a good fit gets close.
  excess = after - (-np.log2(_noisy_density(held_out.astype(np.float64) + u)))
  stderr = np.std(excess) / np.sqrt(excess.size)
  assert np.mean(after) < before - 0.5
  assert np.mean(excess) > -4.0 * stderr
  assert np.mean(excess) < 0.05, np.mean(excess)
