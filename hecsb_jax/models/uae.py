"""Uncertainty autoencoder: learned measurements + amortized MLP decoder.

    x [B, n] ──► W x + σ ε ──► y [B, m] ──► MLP ──► logits [B, n] ──► x̂ = σ(·)
                 (MeasurementEncoder,          (MLPDecoder)
                  ||W||_F <= sqrt(m n))

Training maximizes the variational lower bound on I(X; Y),
E_x E_ε log p_θ(x | W x + σ ε) (Grover & Ermon, AISTATS 2019; HECS-B §3.1):
the channel noise is sampled by reparameterization, so the bound is a
reconstruction loss under noise. The decoder's likelihood is Bernoulli
(sigmoid cross-entropy) or Gaussian with fixed variance (squared error).
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from hecsb_jax.cs.measurement import MeasurementEncoder
from hecsb_jax.models.mlp_decoder import MLPDecoder

LIKELIHOODS = ("bernoulli", "gaussian")


class UncertaintyAutoencoder(nnx.Module):
  """HECS-B part A: statistical compressed sensing of flat signals."""

  def __init__(
      self,
      num_features: int,
      num_measurements: int,
      *,
      noise_std: float = 0.1,
      hidden: Sequence[int] = (600, 600),
      activation: str = "leaky_relu",
      likelihood: str = "bernoulli",
      rngs: nnx.Rngs,
  ):
    if likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood must be one of {LIKELIHOODS}")
    self.likelihood = likelihood
    self.encoder = MeasurementEncoder(
        num_features, num_measurements, noise_std=noise_std, rngs=rngs
    )
    self.decoder = MLPDecoder(
        num_measurements, num_features, hidden=hidden,
        activation=activation, rngs=rngs,
    )

  def __call__(
      self, x: jax.Array, rng: jax.Array | None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Measures and reconstructs.

    Args:
      x: [B, n] float32 signals in [0, 1].
      rng: key for the channel noise (None: noiseless channel).

    Returns:
      (x_hat, aux): x_hat [B, n] in [0, 1]; aux holds ``y`` [B, m] and the
      decoder ``logits`` [B, n].
    """
    y, _ = self.encoder(x, rng)
    logits = self.decoder(y)
    return jax.nn.sigmoid(logits), {"y": y, "logits": logits}

  def reconstruct(self, y: jax.Array) -> jax.Array:
    """Decodes given measurements: [B, m] -> x_hat [B, n] in [0, 1]."""
    return jax.nn.sigmoid(self.decoder(y))

  def project_(self) -> None:
    self.encoder.project_()


def decoder_kernels(params: nnx.State) -> nnx.State:
  """Weight-decay mask over ``nnx.split(model, nnx.Param, ...)`` params.

  Only the decoder's kernels decay. The measurement W is left alone: its
  scale is already held by the Frobenius bound, and shrinking it would only
  lower the signal-to-noise ratio of the channel.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: path[0].key == "decoder" and p.ndim >= 2, params
  )


def uae_loss(
    model: UncertaintyAutoencoder, x: jax.Array, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative variational bound per example (up to constants), batch mean.

  Returns:
    (loss, metrics) with metrics ``l2`` = mean per-image squared error.
  """
  x_hat, aux = model(x, rng)
  if model.likelihood == "bernoulli":
    nll = optax.sigmoid_binary_cross_entropy(aux["logits"], x).sum(-1)
  else:
    nll = jnp.square(x_hat - x).sum(-1)
  l2 = jnp.square(x_hat - x).sum(-1)
  return nll.mean(), {"l2": l2.mean()}
