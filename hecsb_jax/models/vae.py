"""Variational autoencoder: the generator G(z) of the CSGM baseline.

    x [B, 784] ──► MLP 500-500 ──► (mu, log_var) [B, 20] ──► z = mu + s * eps
                   (softplus)                                       │
    x_hat = sigmoid(logits) ◄── logits [B, 784] ◄── MLP 500-500 ◄───┘

The architecture and likelihood follow the VAE of Bora et al. (ICML 2017,
"Compressed sensing using generative models"), itself the MNIST VAE of
Kingma & Welling (2014): softplus hidden units, a diagonal Gaussian encoder,
a Bernoulli decoder scored by cross-entropy on the [0, 1] grey levels.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from hecsb_jax.models.mlp_decoder import MLPDecoder


class VAE(nnx.Module):
  """Gaussian encoder q(z | x), Bernoulli decoder p(x | z), N(0, I) prior."""

  def __init__(
      self,
      num_features: int = 784,
      latent_dim: int = 20,
      *,
      hidden: Sequence[int] = (500, 500),
      rngs: nnx.Rngs,
  ):
    # MLPDecoder is a plain MLP with a linear last layer, so it serves as
    # the encoder too. It emits mu and log-variance side by side: one last
    # layer of width 2 * latent_dim, split in `encode`.
    self.encoder = MLPDecoder(
        num_features, 2 * latent_dim, hidden=hidden, activation="softplus",
        rngs=rngs,
    )
    self.decoder = MLPDecoder(
        latent_dim, num_features, hidden=tuple(reversed(hidden)),
        activation="softplus", rngs=rngs,
    )
    self.latent_dim = latent_dim

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, n] images -> (mu, log_var), each [B, latent_dim] float32."""
    h = self.encoder(x)
    return h[..., : self.latent_dim], h[..., self.latent_dim :]

  def decode_logits(self, z: jax.Array) -> jax.Array:
    """[..., latent_dim] latents -> [..., n] Bernoulli logits."""
    return self.decoder(z)

  def decode(self, z: jax.Array) -> jax.Array:
    """The generator G: [..., latent_dim] -> [..., n] images in [0, 1]."""
    return jax.nn.sigmoid(self.decoder(z))

  def __call__(
      self, x: jax.Array, rng: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes, samples one z by reparameterization, decodes.

    Args:
      x: [B, n] float32 images in [0, 1].
      rng: key for the latent sample.

    Returns:
      (logits, aux): logits [B, n]; aux holds ``mu``, ``log_var`` and ``z``,
      each [B, latent_dim].
    """
    mu, log_var = self.encode(x)
    eps = jax.random.normal(rng, mu.shape, mu.dtype)
    z = mu + jnp.exp(0.5 * log_var) * eps
    return self.decode_logits(z), {"mu": mu, "log_var": log_var, "z": z}


def vae_loss(
    model: VAE, x: jax.Array, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative ELBO per image (one latent sample), batch mean.

  Args:
    model: the VAE.
    x: [B, n] float32 images in [0, 1].
    rng: key for the latent sample.

  Returns:
    (loss, metrics): loss = mean over the batch of
    -E_q[log p(x | z)] + KL(q(z | x) || N(0, I)), in nats; metrics hold its
    two terms ``reconstruction`` and ``kl`` (batch means).
  """
  logits, aux = model(x, rng)
  reconstruction = optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
  mu, log_var = aux["mu"], aux["log_var"]
  # KL of N(mu, diag(exp(log_var))) from N(0, I), in closed form.
  kl = 0.5 * jnp.sum(jnp.exp(log_var) + mu * mu - 1.0 - log_var, axis=-1)
  return (reconstruction + kl).mean(), {
      "reconstruction": reconstruction.mean(),
      "kl": kl.mean(),
  }
