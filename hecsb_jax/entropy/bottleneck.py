"""Entropy bottleneck: noisy or rounded latents and their rate in bits.

    training=True:   y --(+ U(-1/2, 1/2))--> y_tilde --prior--> bits
    training=False:  y --round, grad 1-----> y_hat   --prior--> bits
                                               |
                                 round(y) as int32 symbols --> coding.compress
                                                                (CodingTables
                                                                 from
                                                                 build_tables)

Rounding is to the integers, with no per-channel offset. tensorflow-compression
and CompressAI can round around each channel's median instead, which helps a
prior whose mode sits near a half-integer, but then the receiver needs the
float medians to rebuild y_hat = symbol + median. Here the decoded symbols are
y_hat exactly: nothing but the integer tables crosses the link, and the
encoder in front of the bottleneck, trained through the noise, is free to
centre its outputs where the integer grid suits the prior.

`build_tables` runs once on the host after training: it finds each channel's
support by bisection on the (monotone) CDF, evaluates the probability masses
of the integers in float64 with numpy, and quantizes them with
`tables_from_pmf`. The tables are then saved with the checkpoint; the receiver
loads them and never recomputes them from floats.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hecsb_jax.coding import tables as coding_tables
from hecsb_jax.entropy import prior as prior_lib
from hecsb_jax.entropy import tables as tables_lib


class EntropyBottleneck(nnx.Module):
  """Factorized-prior bottleneck, channels last.

  Attributes:
    prior: the `FactorizedPrior` that gives the likelihoods.
  """

  def __init__(
      self,
      num_channels: int,
      *,
      filters: tuple[int, ...] = (3, 3, 3),
      init_scale: float = 10.0,
      rngs: nnx.Rngs,
  ):
    """Builds the prior; arguments as for `FactorizedPrior`."""
    self.prior = prior_lib.FactorizedPrior(
        num_channels, filters=filters, init_scale=init_scale, rngs=rngs
    )

  def __call__(
      self,
      y: jax.Array,
      training: bool,
      rng: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Perturbs (training) or rounds (coding) y and measures its rate.

    Args:
      y: [B, ..., C] float32 latents, channels last.
      training: True for additive uniform noise (a differentiable proxy of
        quantization), False for rounding with a straight-through gradient.
      rng: PRNG key for the noise; required when training.

    Returns:
      (y_out, aux): y_out [B, ..., C] float32 (y_tilde or y_hat); aux holds
      `y`, `y_tilde` or `y_hat`, `likelihoods` [B, ..., C] float32 and `bits`
      [B] float32 (-sum log2 p over all but the batch axis).
    """
    if y.ndim < 2:
      raise ValueError(
          f"expected y of shape [B, ..., C] (batch first, channels last), got"
          f" {tuple(y.shape)}"
      )
    if training:
      if rng is None:
        raise ValueError("training=True needs an rng key for the noise")
      noise = jax.random.uniform(rng, y.shape, y.dtype, -0.5, 0.5)
      y_out = y + noise
      name = "y_tilde"
    else:
      y_out = round_st(y)
      name = "y_hat"
    likelihoods = self.prior.likelihood(y_out)
    bits = -jnp.sum(jnp.log2(likelihoods), axis=tuple(range(1, y.ndim)))
    aux = {"y": y, name: y_out, "likelihoods": likelihoods, "bits": bits}
    return y_out, aux

  @staticmethod
  def quantize(y: jax.Array) -> jax.Array:
    """The symbols to code: round(y) as int32, [..., C] -> [..., C]."""
    return jnp.round(y).astype(jnp.int32)

  @staticmethod
  def dequantize(symbols: Any) -> jax.Array:
    """Decoded int32 symbols [..., C] -> y_hat [..., C] float32."""
    return jnp.asarray(symbols, jnp.float32)


def round_st(y: jax.Array) -> jax.Array:
  """Rounds to the nearest integer (ties to even); gradient exactly 1.

  Args:
    y: any shape, floating.

  Returns:
    round(y), same shape and dtype.
  """
  # round(y) - y is exact in floating point (Sterbenz: round(y) lies within
  # a factor 2 of y, or is 0), so adding it back to y gives round(y) bit for
  # bit; the forward pass is a true rounding, not an approximation.
  return y + jax.lax.stop_gradient(jnp.round(y) - y)


def _logit(p: float) -> float:
  return float(np.log(p) - np.log1p(-p))


def _solve_logits(params: dict, target: float, num_channels: int) -> np.ndarray:
  """Per channel the y with cdf_logits(y) = target, by bisection.

  The CDF network is strictly increasing (see prior.py), so a bracket found by
  doubling and 100 halvings pin y to float64 resolution.

  Args:
    params: `FactorizedPrior.numpy_params()`.
    target: the logit to reach.
    num_channels: C.

  Returns:
    [C] float64.
  """
  f = lambda y: prior_lib.cdf_logits(y, xp=np, **params) - target
  lo = np.full(num_channels, -1.0)
  hi = np.full(num_channels, 1.0)
  for _ in range(64):
    bad_lo, bad_hi = f(lo) > 0, f(hi) < 0
    if not (bad_lo.any() or bad_hi.any()):
      break
    lo = np.where(bad_lo, 2.0 * lo, lo)
    hi = np.where(bad_hi, 2.0 * hi, hi)
  else:
    raise ValueError(
        "cannot bracket a quantile of the prior within +-2^64; its CDF is"
        " degenerate (non-finite parameters?)"
    )
  for _ in range(100):
    mid = 0.5 * (lo + hi)
    above = f(mid) > 0
    hi = np.where(above, mid, hi)
    lo = np.where(above, lo, mid)
  return 0.5 * (lo + hi)


def support(
    prior: prior_lib.FactorizedPrior, tail_mass: float
) -> tuple[np.ndarray, np.ndarray]:
  """Per channel the integer range holding all but `tail_mass` of the mass.

  Args:
    prior: a trained prior.
    tail_mass: total probability allowed outside [lo, hi], split evenly
      between the two tails, in (0, 1).

  Returns:
    (lo, hi): [C] int64 each, lo <= hi.
  """
  if not 0.0 < tail_mass < 1.0:
    raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
  params = prior.numpy_params()
  c = prior.num_channels
  y_lo = _solve_logits(params, _logit(tail_mass / 2), c)
  y_hi = _solve_logits(params, _logit(1.0 - tail_mass / 2), c)
  # The integer k owns [k - 1/2, k + 1/2]; keep every integer whose interval
  # reaches into [y_lo, y_hi].
  lo = np.floor(y_lo + 0.5).astype(np.int64)
  hi = np.ceil(y_hi - 0.5).astype(np.int64)
  return lo, np.maximum(hi, lo)


def integer_pmf(
    prior: prior_lib.FactorizedPrior, offset: np.ndarray, num_symbols: int
) -> np.ndarray:
  """Probability masses of the integers offset[c] ... offset[c] + K - 1.

  Args:
    prior: a trained prior.
    offset: [C] integers, the first symbol of each channel.
    num_symbols: K.

  Returns:
    [C, K] float64, P(round(Y_c) = offset[c] + k) under the prior.
  """
  params = prior.numpy_params()
  y = np.asarray(offset, np.float64)[None, :] + np.arange(num_symbols)[:, None]
  lower = prior_lib.cdf_logits(y - 0.5, xp=np, **params)
  upper = prior_lib.cdf_logits(y + 0.5, xp=np, **params)
  return prior_lib.interval_probability(lower, upper, xp=np).T


def build_tables(
    prior_or_bottleneck: prior_lib.FactorizedPrior | EntropyBottleneck,
    precision: int = 16,
    tail_mass: float = 2**-8,
) -> coding_tables.CodingTables:
  """Integer coding tables for a trained prior, built once on the host.

  Every channel gets the same number of symbols K (the widest support), each
  starting at its own offset; masses outside a channel's [lo, hi] are the
  prior's true (small) masses, not zeros, and whatever the window misses goes
  to the escape symbol inside `tables_from_pmf`.

  Args:
    prior_or_bottleneck: a `FactorizedPrior` or an `EntropyBottleneck`.
    precision: bits of the integer CDF, 1 ... 16.
    tail_mass: probability left outside each channel's support.

  Returns:
    `CodingTables` (numpy int32 arrays).
  """
  prior = prior_or_bottleneck
  if isinstance(prior, EntropyBottleneck):
    prior = prior.prior
  lo, hi = support(prior, tail_mass)
  num_symbols = int(np.max(hi - lo + 1))
  # One frequency slot is the escape, and every symbol needs at least 1.
  if num_symbols + 1 > 2**precision:
    raise ValueError(
        f"the prior's support spans {num_symbols} integers, more than a"
        f" {precision}-bit table can hold ({2**precision - 1}); raise"
        " precision or tail_mass"
    )
  pmf = integer_pmf(prior, lo, num_symbols)
  return tables_lib.tables_from_pmf(
      pmf, lo.astype(np.int32), precision=precision
  )
