"""A multilayer perceptron decoder: measurements -> signal logits."""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
}


class MLPDecoder(nnx.Module):
  """Dense layers with a nonlinearity between them; returns logits.

  The output is left as logits so that the caller picks the likelihood
  (Bernoulli: sigmoid cross-entropy; Gaussian: squared error on sigmoid).
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      hidden: Sequence[int] = (600, 600),
      activation: str = "leaky_relu",
      use_bias: bool = True,
      rngs: nnx.Rngs,
  ):
    if activation not in ACTIVATIONS:
      raise ValueError(
          f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
      )
    sizes = [in_features, *hidden, out_features]
    self.layers = nnx.List([
        nnx.Linear(a, b, use_bias=use_bias, rngs=rngs)
        for a, b in zip(sizes[:-1], sizes[1:])
    ])
    self.activation = activation

  def __call__(self, y: jax.Array) -> jax.Array:
    """[B, in_features] -> [B, out_features] logits."""
    act = ACTIVATIONS[self.activation]
    h = y
    for layer in self.layers[:-1]:
      h = act(layer(h))
    return self.layers[-1](h)
