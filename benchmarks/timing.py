"""Clocks shared by the benchmarks: best-of-N wall time, the matmul peak."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def best_time(fn, repeats: int) -> float:
  """Minimum wall time of ``fn()`` over ``repeats`` calls (after warm-up).

  The minimum, not the mean: on a shared machine every disturbance makes a
  call slower, never faster.
  """
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def matmul_flops_per_s(n: int, repeats: int) -> float:
  """Dense float32 matmul rate of this machine (square n x n matrices)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  return 2 * n**3 / best_time(lambda: matmul(a, b), repeats)


def compiled_flops(jitted, *args) -> float:
  """XLA's FLOP count of one call of ``jitted(*args)`` (multiplies and adds
  counted apart)."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
    analysis = analysis[0]
  return float(analysis["flops"])
