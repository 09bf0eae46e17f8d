"""The server's forward pass: decoded symbols -> class probabilities.

    symbols int32 [n, h, w, m] ─► pad to a bucket (1, 2, 4, ... max_batch)
      ─► jitted logits_from_symbols ─► softmax ─► top-5 ─► first n rows

Batches are padded up to a power of two (or `max_batch`), so a server
compiles at most ceil(log2(max_batch)) + 1 programs, all of them at start
(`warm_up`), and no request ever waits for a compile.
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

TOP_K = 5


def batch_buckets(max_batch: int) -> tuple[int, ...]:
  """The padded batch sizes: powers of two below `max_batch`, then it."""
  if max_batch < 1:
    raise ValueError(f"max_batch must be >= 1, got {max_batch}")
  sizes, b = [], 1
  while b < max_batch:
    sizes.append(b)
    b *= 2
  return tuple(sizes + [max_batch])


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One image's answer.

  Attributes:
    top_classes: [TOP_K] int, most probable first.
    top_probabilities: [TOP_K] float, their softmax probabilities.
  """

  top_classes: np.ndarray
  top_probabilities: np.ndarray


class Predictor:
  """The jitted server side of a split model.

  Attributes:
    symbol_shape: (h, w, m), what one image's symbols must be.
    buckets: the batch sizes compiled (`batch_buckets`).
  """

  def __init__(self, module: nnx.Module, image_size: int, max_batch: int):
    """Traces the module's server side.

    Args:
      module: a split model in eval mode with ``edge_symbols`` and
        ``logits_from_symbols`` (int32 symbols; not CR+BQ's 8-bit tensors).
      image_size: the side of the module's square input, to infer the
        symbols' shape from ``edge_symbols``.
      max_batch: largest batch of one forward pass.
    """
    self.buckets = batch_buckets(max_batch)
    out = nnx.eval_shape(
        lambda m: m.edge_symbols(
            jnp.zeros((1, image_size, image_size, 3), jnp.float32)), module)
    if getattr(out, "dtype", None) != jnp.int32:
      raise ValueError(
          "the server needs a model whose edge sends int32 symbols (hecsb,"
          f" svb); this one's edge_symbols gives {out!r}")
    self.symbol_shape = tuple(int(d) for d in out.shape[1:])
    # nnx.split once: a jax.jit of a pure function over the state costs
    # far less per call than nnx.jit walking the module graph each time.
    graphdef, state = nnx.split(module)
    self._state = state

    def forward(state, symbols):
      logits = nnx.merge(graphdef, state).logits_from_symbols(symbols)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      return jax.lax.top_k(probs, TOP_K)

    self._forward = jax.jit(forward)

  def warm_up(self) -> None:
    """Compiles (and runs once) every bucket's program."""
    for b in self.buckets:
      jax.block_until_ready(
          self._forward(self._state,
                        jnp.zeros((b, *self.symbol_shape), jnp.int32)))

  def bucket(self, n: int) -> int:
    """The padded size of a batch of `n` (1 <= n <= max_batch)."""
    for b in self.buckets:
      if n <= b:
        return b
    raise ValueError(f"batch of {n} exceeds max_batch {self.buckets[-1]}")

  def predict(self, symbols: list[np.ndarray]) -> list[Prediction]:
    """One forward pass over the images' symbols (blocking).

    Args:
      symbols: up to max_batch int32 arrays of `symbol_shape` (or
        [1, *symbol_shape]).

    Returns:
      one `Prediction` per array, in order.
    """
    n = len(symbols)
    batch = np.zeros((self.bucket(n), *self.symbol_shape), np.int32)
    for i, s in enumerate(symbols):
      batch[i] = np.reshape(s, self.symbol_shape)
    values, indices = jax.device_get(self._forward(self._state, batch))
    return [Prediction(indices[i], values[i]) for i in range(n)]
