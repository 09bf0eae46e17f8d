"""Tests for the CSGM generator VAE and its training through the trainer."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.train.trainer import FitConfig, fit
from hecsb_jax.models.vae import VAE, vae_loss


def _mnist_subset(mnist_dir, num_train, num_val):
  from hecsb_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  ds = load_dataset("mnist", mnist_dir)
  return ds.train.images[:num_train], ds.val.images[:num_val]


def test_shapes_and_decode_range():
  vae = VAE(rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 784)),
                  jnp.float32)
  logits, aux = vae(x, jax.random.key(1))
  assert logits.shape == (3, 784)
  assert aux["mu"].shape == aux["log_var"].shape == aux["z"].shape == (3, 20)
  g = vae.decode(jax.random.normal(jax.random.key(2), (5, 7, 20)))
  assert g.shape == (5, 7, 784)
  assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
  # Layer widths 784-500-500-20 (x2 for mu, log_var) and back.
  widths = [l.kernel.shape for l in vae.encoder.layers]
  assert widths == [(784, 500), (500, 500), (500, 40)]
  widths = [l.kernel.shape for l in vae.decoder.layers]
  assert widths == [(20, 500), (500, 500), (500, 784)]


def test_kl_term_matches_monte_carlo_estimate():
  vae = VAE(32, latent_dim=4, hidden=(16,), rngs=nnx.Rngs(3))
  x = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 32)),
                  jnp.float32)
  _, metrics = vae_loss(vae, x, jax.random.key(5))
  mu, log_var = vae.encode(x)
  std = jnp.exp(0.5 * log_var)
  # E_q[log q(z) - log p(z)] from many reparameterized samples; the
  # normalizing constants cancel.
  eps = jax.random.normal(jax.random.key(6), (200_000, *mu.shape))
  z = mu + std * eps
  log_q = jnp.sum(-0.5 * eps**2 - jnp.log(std), -1)
  log_p = jnp.sum(-0.5 * z**2, -1)
  kl_mc = float(jnp.mean(log_q - log_p))
  assert metrics["kl"] == pytest.approx(kl_mc, rel=2e-2, abs=2e-3)


def test_reconstruction_term_is_bernoulli_nll():
  vae = VAE(32, latent_dim=4, hidden=(16,), rngs=nnx.Rngs(7))
  x = jnp.asarray(np.random.default_rng(8).uniform(size=(3, 32)),
                  jnp.float32)
  rng = jax.random.key(9)
  loss, metrics = vae_loss(vae, x, rng)
  p = np.asarray(jax.nn.sigmoid(vae(x, rng)[0]), np.float64)
  xn = np.asarray(x, np.float64)
  nll = -np.sum(xn * np.log(p) + (1 - xn) * np.log1p(-p), -1).mean()
  assert float(metrics["reconstruction"]) == pytest.approx(nll, rel=1e-5)
  assert float(loss) == pytest.approx(
      float(metrics["reconstruction"] + metrics["kl"]), rel=1e-6)


def test_training_lowers_negative_elbo_on_mnist(mnist_dir):
  train_x, val_x = _mnist_subset(mnist_dir, 1000, 200)
  before, _ = vae_loss(VAE(rngs=nnx.Rngs(0)), jnp.asarray(val_x),
                       jax.random.key(0))
  # 3 epochs of 10 steps: a few dozen Adam steps.
  vae = fit(VAE(rngs=nnx.Rngs(0)), vae_loss, train_x, val_x,
            FitConfig(epochs=3), progress=False).model
  after, metrics = vae_loss(vae, jnp.asarray(val_x), jax.random.key(0))
  # An untrained decoder scores ~784 ln 2 ~ 543 nats; a few dozen steps
  # learn at least the mean image, which is far better.
  assert float(after) < 0.6 * float(before), (float(before), float(after))
  assert np.isfinite(float(metrics["kl"]))
