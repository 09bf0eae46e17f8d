"""CSGM: compressed sensing by latent search through a generator.

Bora, Jalal, Price & Dimakis, "Compressed Sensing using Generative Models"
(ICML 2017): given y = A x + noise and a generator G (here a VAE decoder),

  z* = argmin_z ||A G(z) - y||^2 + z_reg ||z||^2,     x_hat = G(z*),

found by Adam from several random starts z ~ N(0, I). For each image the
start whose final measurement error ||A G(z) - y||^2 is lowest wins; the
ground truth is never consulted.

  y [B, m] ──► z [B, R, k] ~ N(0, I) ──► lax.scan(Adam step) ──► z* [B, R, k]
                                                                    │
  x_hat [B, n] ◄── G(z*) at argmin_R ||A G(z*) - y||^2 ◄────────────┘

All B * R latent vectors are optimised together in one jitted scan. Their
losses are summed, which leaves each vector's gradient equal to that of its
own loss, and Adam is elementwise, so every (image, restart) pair follows
exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax


DEFAULT_NUM_RESTARTS = 10
DEFAULT_NUM_STEPS = 1000
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_Z_REG = 0.1


@dataclasses.dataclass(frozen=True)
class _ModuleCall:
  """G(state, z) for a method of an nnx module; hashable, so jit-static.

  The module's parameters travel as a jit argument (not baked-in
  constants), so one compilation serves every model of the same structure.
  """

  graphdef: Any
  method: Callable

  def __call__(self, state, z):
    return self.method(nnx.merge(self.graphdef, state), z)


@dataclasses.dataclass(frozen=True)
class _PlainCall:
  """G(state, z) for a plain function of z; state is unused."""

  fn: Callable

  def __call__(self, state, z):
    del state
    return self.fn(z)


def _as_generator(generator, latent_dim):
  """-> (apply, state, latent_dim) for a module, bound method or function."""
  if isinstance(generator, nnx.Module):
    module, method = generator, type(generator).decode
  elif isinstance(getattr(generator, "__self__", None), nnx.Module):
    module, method = generator.__self__, generator.__func__
  else:
    module = None
  if module is not None:
    graphdef, state = nnx.split(module)
    apply = _ModuleCall(graphdef, method)
    latent_dim = latent_dim or getattr(module, "latent_dim", None)
  elif callable(generator):
    apply, state = _PlainCall(generator), None
  else:
    raise TypeError(
        "generator must be an nnx module with a decode method, a bound"
        f" method of one, or a function z -> x; got {type(generator)}"
    )
  if not latent_dim:
    raise ValueError(
        "latent_dim is needed when the generator does not carry a"
        " `latent_dim` attribute"
    )
  return apply, state, int(latent_dim)


@functools.partial(
    jax.jit,
    static_argnames=("apply", "num_restarts", "num_steps", "latent_dim"),
)
def _search(apply, state, A, y, key, learning_rate, z_reg, *, num_restarts,
            num_steps, latent_dim):
  """The jitted latent search; see `csgm_search`."""
  b = y.shape[0]
  tx = optax.adam(learning_rate)

  def losses(z):
    # z [B, R, k] -> x [B, R, n]; each restart is compared with its image's y.
    r = apply(state, z) @ A.T - y[:, None, :]
    measurement = jnp.sum(r * r, axis=-1)
    return measurement + z_reg * jnp.sum(z * z, axis=-1), measurement

  def step(carry, _):
    z, opt_state = carry
    grads = jax.grad(lambda z: jnp.sum(losses(z)[0]))(z)
    updates, opt_state = tx.update(grads, opt_state, z)
    return (optax.apply_updates(z, updates), opt_state), None

  z0 = jax.random.normal(key, (b, num_restarts, latent_dim), y.dtype)
  (z, _), _ = jax.lax.scan(step, (z0, tx.init(z0)), None, length=num_steps)
  objective, measurement = losses(z)
  best = jnp.argmin(measurement, axis=1)
  x_best = apply(state, z[jnp.arange(b), best])
  aux = {"z": z, "measurement_loss": measurement, "objective": objective,
         "best_restart": best}
  return x_best, aux


def csgm_search(
    generator,
    A,
    y,
    *,
    key: jax.Array,
    num_restarts: int = DEFAULT_NUM_RESTARTS,
    num_steps: int = DEFAULT_NUM_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    z_reg: float = DEFAULT_Z_REG,
    latent_dim: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Latent search with restarts; returns the result and what led to it.

  Args:
    generator: a `VAE` (its `decode` is used), a bound method of an nnx
      module such as ``vae.decode``, or a jax function z [..., k] -> x
      [..., n]. It must act row-wise on batched latents.
    A: [m, n] float32 measurement matrix.
    y: [B, m] float32 measurements.
    key: PRNG key for the initial latents.
    num_restarts: random starts per image (R).
    num_steps: Adam steps per start.
    learning_rate: Adam step size.
    z_reg: weight of ||z||^2.
    latent_dim: k; read from the module's ``latent_dim`` when omitted.

  Returns:
    (x_hat, aux): x_hat [B, n] = G(z*) of each image's best start; aux holds
    ``z`` [B, R, k] final latents, ``measurement_loss`` [B, R]
    ||A G(z) - y||^2, ``objective`` [B, R] (with the z penalty) and
    ``best_restart`` [B] int32, the argmin of ``measurement_loss``.
  """
  apply, state, latent_dim = _as_generator(generator, latent_dim)
  A = jnp.asarray(A, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if A.ndim != 2 or y.ndim != 2 or y.shape[1] != A.shape[0]:
    raise ValueError(
        f"expected A [m, n] and y [B, m]; got A {A.shape}, y {y.shape}"
    )
  if num_restarts < 1 or num_steps < 0:
    raise ValueError(
        f"need num_restarts >= 1 and num_steps >= 0, got {num_restarts},"
        f" {num_steps}"
    )
  return _search(
      apply, state, A, y, key, jnp.float32(learning_rate),
      jnp.float32(z_reg), num_restarts=int(num_restarts),
      num_steps=int(num_steps), latent_dim=latent_dim,
  )


def csgm_recover(
    generator,
    A,
    y,
    *,
    key: jax.Array,
    num_restarts: int = DEFAULT_NUM_RESTARTS,
    num_steps: int = DEFAULT_NUM_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    z_reg: float = DEFAULT_Z_REG,
    latent_dim: int | None = None,
) -> jax.Array:
  """Recovers images from y = A x + noise through a generator (CSGM).

  Args: as `csgm_search`.

  Returns:
    [B, n] float32 reconstructions G(z*), one per image.
  """
  x_hat, _ = csgm_search(
      generator, A, y, key=key, num_restarts=num_restarts,
      num_steps=num_steps, learning_rate=learning_rate, z_reg=z_reg,
      latent_dim=latent_dim,
  )
  return x_hat
