"""Generalized divisive normalization (GDN) and its inverse (IGDN).

    GDN:   y_i = x_i / sqrt(beta_i + Σ_j gamma_ij x_j²)
    IGDN:  y_i = x_i · sqrt(beta_i + Σ_j gamma_ij x_j²)

J. Ballé, V. Laparra, E. P. Simoncelli, "Density modeling of images using a
generalized normalization transformation", ICLR 2016; the nonlinearity of
the learned image codecs of Ballé et al. (ICLR 2017, 2018). The sum runs over
the channels at the same position (channels last), i.e. a 1×1 convolution of
x² with the [C, C] matrix gamma (row i: the weights of output channel i).

beta must stay positive (it bounds the division) and gamma nonnegative. As in
tensorflow-compression's `NonnegativeParameterization` (and CompressAI's
`NonNegativeParametrizer`) each is stored as a free parameter p with

    value = lower_bound(p, sqrt(minimum + pedestal))² − pedestal,
    pedestal = reparam_offset²,  reparam_offset = 2^-18,

so value >= minimum (beta_min = 1e-6 for beta, 0 for gamma). The square
makes the gradient near zero proportional to p, which keeps small values
from being pushed through zero by one large step, and the pedestal keeps
that gradient from vanishing at exactly zero. `lower_bound` lets the
gradient through where it would raise p back above the bound.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from hecsb_jax.entropy.prior import lower_bound

REPARAM_OFFSET = 2.0**-18
_PEDESTAL = REPARAM_OFFSET**2


def nonnegative_init(value: jax.Array) -> jax.Array:
  """The free parameter p whose `nonnegative_value` is ``value``."""
  return jnp.sqrt(jnp.maximum(value + _PEDESTAL, _PEDESTAL))


def nonnegative_value(p: jax.Array, minimum: float) -> jax.Array:
  """The constrained value (>= ``minimum``) of the free parameter p."""
  bound = (minimum + _PEDESTAL) ** 0.5
  return jnp.square(lower_bound(p, bound)) - _PEDESTAL


class GDN(nnx.Module):
  """GDN (or, with ``inverse=True``, IGDN) over the last axis.

  Attributes:
    beta: free parameter [C] of beta (see `beta_value`).
    gamma: free parameter [C, C] of gamma (see `gamma_value`).
    inverse: IGDN (multiply) instead of GDN (divide).
    beta_min: the smallest value beta can take.
  """

  def __init__(
      self,
      num_channels: int,
      *,
      inverse: bool = False,
      beta_min: float = 1e-6,
      gamma_init: float = 0.1,
  ):
    """Starts at beta = 1, gamma = gamma_init · I (tensorflow-compression's
    and CompressAI's defaults): near the identity map for |x| << 3.

    Args:
      num_channels: C.
      inverse: build IGDN.
      beta_min: lower bound of beta (> 0).
      gamma_init: diagonal of the initial gamma (>= 0).
    """
    if num_channels < 1:
      raise ValueError(f"num_channels must be positive, got {num_channels}")
    if beta_min <= 0:
      raise ValueError(f"beta_min must be positive, got {beta_min}")
    if gamma_init < 0:
      raise ValueError(f"gamma_init must be >= 0, got {gamma_init}")
    self.inverse = bool(inverse)
    self.beta_min = float(beta_min)
    self.beta = nnx.Param(nonnegative_init(jnp.ones((num_channels,))))
    self.gamma = nnx.Param(
        nonnegative_init(gamma_init * jnp.eye(num_channels)))

  def beta_value(self) -> jax.Array:
    """beta [C] float32, >= beta_min."""
    return nonnegative_value(self.beta[...], self.beta_min)

  def gamma_value(self) -> jax.Array:
    """gamma [C, C] float32, >= 0; gamma[i, j] weighs x_j² for output i."""
    return nonnegative_value(self.gamma[...], 0.0)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., C] float32 -> [..., C] float32."""
    norm = self.beta_value() + jnp.einsum(
        "...j,ij->...i", jnp.square(x), self.gamma_value())
    if self.inverse:
      return x * jnp.sqrt(norm)
    return x * jax.lax.rsqrt(norm)


class IGDN(GDN):
  """Inverse GDN: `GDN` with ``inverse=True`` (same arguments otherwise)."""

  def __init__(self, num_channels: int, **kwargs):
    super().__init__(num_channels, inverse=True, **kwargs)
