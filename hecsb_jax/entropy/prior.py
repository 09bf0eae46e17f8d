"""Per-channel non-parametric factorized density (Ballé et al. 2018).

J. Ballé, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational image
compression with a scale hyperprior", ICLR 2018, appendix 6.1.

Every channel c owns a small univariate network f_c: R -> R whose output is
the logit of a cumulative distribution, c_c(y) = sigmoid(f_c(y)). The network
is a chain of affine maps with elementwise-positive matrices (softplus of a
free parameter) and tanh-gated nonlinearities x + tanh(a) * tanh(x). Because
|tanh(a)| < 1 every gate has a strictly positive derivative, and positive
matrices keep the chain monotone, so c_c is a valid, strictly increasing CDF.

    y [..., C] --> x_0 = y[..., None]                      (width 1)
               --> x_k = softplus(H_k) x_{k-1} + b_k        (per channel)
               --> x_k = x_k + tanh(a_k) * tanh(x_k)        (all but last)
               --> logits [..., C]  (width 1)  --> c(y) = sigmoid(logits)

The probability of the unit interval around y is c(y + 1/2) - c(y - 1/2):
the density of y + U(-1/2, 1/2) during training, and the probability mass of
the integer y when coding. Channels are last everywhere.

The forward map is written once over an array namespace (`jax.numpy` for
training, `numpy` in float64 for table building on the host) so both paths
evaluate the same function.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Below this the likelihood is clamped; keeps log2 finite and the gradient
# informative for values far in the tails.
LIKELIHOOD_BOUND = 1e-9


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
  """max(x, bound) whose gradient still flows where it would raise x.

  A plain maximum has zero gradient below the bound, so a likelihood stuck at
  the floor could never recover. Here the gradient passes when x >= bound, or
  when the incoming gradient would push x upwards (towards the bound).

  Args:
    x: any shape, floating.
    bound: the floor.

  Returns:
    Same shape and dtype as x.
  """
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), x


def _lower_bound_bwd(bound, x, g):
  # Gradient descent moves x by -g; g < 0 means "increase x".
  pass_through = (x >= bound) | (g < 0)
  return (jnp.where(pass_through, g, 0.0).astype(g.dtype),)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def cdf_logits(
    y: Any,
    matrices: Sequence[Any],
    biases: Sequence[Any],
    factors: Sequence[Any],
    xp: Any = jnp,
) -> Any:
  """Logits of the per-channel CDF network, for jnp or np arrays.

  Args:
    y: [..., C] values.
    matrices: K free matrices, matrices[k] [C, d_{k+1}, d_k] (softplus makes
      them positive).
    biases: K arrays, biases[k] [C, d_{k+1}].
    factors: K - 1 gate parameters, factors[k] [C, d_{k+1}].
    xp: the array namespace, `jax.numpy` or `numpy`.

  Returns:
    [..., C] logits f_c(y); sigmoid of it is the CDF.
  """
  x = y[..., None]  # [..., C, 1]
  for k, (h, b) in enumerate(zip(matrices, biases)):
    # softplus(h) = log(1 + e^h), written so numpy and jnp share the line.
    w = xp.logaddexp(0.0, h)
    x = xp.einsum("cij,...cj->...ci", w, x) + b
    if k < len(factors):
      x = x + xp.tanh(factors[k]) * xp.tanh(x)
  return x[..., 0]


def interval_probability(lower: Any, upper: Any, xp: Any = jnp) -> Any:
  """sigmoid(upper) - sigmoid(lower), without cancellation in the tails.

  Far in the upper tail both sigmoids round to 1 and their difference to 0.
  Flipping both logits (sigmoid(-u) = 1 - sigmoid(u)) moves the computation to
  the tail where sigmoids are small and exact; the sign of lower + upper says
  which tail we are in. The sign is treated as a constant for gradients.

  Args:
    lower: [...] logits at the interval's lower end.
    upper: [...] logits at the upper end (>= lower).
    xp: `jax.numpy` or `numpy`.

  Returns:
    [...] probabilities in [0, 1].
  """
  sign = -xp.sign(lower + upper)
  if xp is jnp:
    sign = jax.lax.stop_gradient(sign)
  sign = xp.where(sign == 0, 1.0, sign).astype(lower.dtype)
  if xp is jnp:
    sig = jax.nn.sigmoid
  else:
    def sig(t):
      # Stable logistic in numpy for both signs.
      return np.exp(-np.logaddexp(0.0, -t))
  return xp.abs(sig(sign * upper) - sig(sign * lower))


class FactorizedPrior(nnx.Module):
  """Per-channel monotone-network density, channels last.

  Attributes:
    num_channels: C.
    filters: hidden widths of each channel's CDF network.
    matrices / biases / factors: `nnx.Param` lists; see `cdf_logits`.
  """

  def __init__(
      self,
      num_channels: int,
      *,
      filters: Sequence[int] = (3, 3, 3),
      init_scale: float = 10.0,
      rngs: nnx.Rngs,
  ):
    """Builds the parameters.

    Args:
      num_channels: C, the size of the last axis of y.
      filters: hidden widths; the network is 1 -> filters... -> 1.
      init_scale: width of the initial density (roughly the scale of y at
        initialization); the matrices start so the whole chain multiplies by
        1 / init_scale, making the initial CDF a smooth ramp over
        about [-init_scale, init_scale].
      rngs: `nnx.Rngs` with a `params` stream (bias initialization).
    """
    if num_channels <= 0:
      raise ValueError(f"num_channels must be positive, got {num_channels}")
    if init_scale <= 0:
      raise ValueError(f"init_scale must be positive, got {init_scale}")
    self.num_channels = num_channels
    self.filters = tuple(int(f) for f in filters)
    dims = (1,) + self.filters + (1,)
    # Split 1 / init_scale evenly among the layers.
    scale = init_scale ** (1.0 / (len(self.filters) + 1))
    matrices, biases, factors = [], [], []
    for k in range(len(dims) - 1):
      d_in, d_out = dims[k], dims[k + 1]
      # softplus(init) = 1 / (scale * d_in): each row sums to 1 / scale, so
      # every layer shrinks its input by `scale` at initialization.
      init = np.log(np.expm1(1.0 / scale / d_in))
      matrices.append(nnx.Param(
          jnp.full((num_channels, d_out, d_in), init, jnp.float32)))
      biases.append(nnx.Param(jax.random.uniform(
          rngs.params(), (num_channels, d_out), jnp.float32, -0.5, 0.5)))
      if k < len(dims) - 2:
        factors.append(nnx.Param(jnp.zeros((num_channels, d_out), jnp.float32)))
    self.matrices = nnx.List(matrices)
    self.biases = nnx.List(biases)
    self.factors = nnx.List(factors)

  def _params(self):
    return (
        [m[...] for m in self.matrices],
        [b[...] for b in self.biases],
        [f[...] for f in self.factors],
    )

  def logits_cumulative(self, y: jax.Array) -> jax.Array:
    """Logits of the CDF at y.

    Args:
      y: [..., C] float32.

    Returns:
      [..., C] float32; sigmoid(result) = P(Y <= y).
    """
    self._check_channels(y)
    return cdf_logits(y, *self._params(), xp=jnp)

  def likelihood(self, y: jax.Array) -> jax.Array:
    """c(y + 1/2) - c(y - 1/2), lower-bounded by `LIKELIHOOD_BOUND`.

    Args:
      y: [..., C] float32, noisy (training) or rounded (coding) values.

    Returns:
      [..., C] float32 probabilities in [LIKELIHOOD_BOUND, 1].
    """
    self._check_channels(y)
    params = self._params()
    lower = cdf_logits(y - 0.5, *params, xp=jnp)
    upper = cdf_logits(y + 0.5, *params, xp=jnp)
    p = interval_probability(lower, upper, xp=jnp)
    return lower_bound(p, LIKELIHOOD_BOUND)

  def numpy_params(self) -> dict[str, list[np.ndarray]]:
    """The parameters as float64 numpy arrays, for host-side table building.

    Returns:
      {"matrices": [...], "biases": [...], "factors": [...]}, float64.
    """
    m, b, f = self._params()
    as64 = lambda xs: [np.asarray(x, np.float64) for x in xs]
    return {"matrices": as64(m), "biases": as64(b), "factors": as64(f)}

  def _check_channels(self, y: jax.Array) -> None:
    if y.ndim < 1 or y.shape[-1] != self.num_channels:
      raise ValueError(
          f"expected y of shape [..., {self.num_channels}] (channels last),"
          f" got {tuple(y.shape)}"
      )
