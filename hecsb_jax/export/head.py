"""The edge head as one pure function: pixels in, integer symbols out.

    pixels float32 [1, S, S, 3], RGB 0..255 (the resized centre crop)
      ─► (x - mean) / std          the backbone's normalization
      ─► acquisition               e.g. EfficientNet-Lite0 up to block4
      ─► measurement               1x1, C_a -> m channels
      ─► round, int32              symbols [1, h, w, m]

This is `SplitModel.edge_symbols` of the normalized image, with the
model's parameters closed over as constants, so that `jax.export` and the
LiteRT converter see a self-contained graph. Both exported artifacts
(StableHLO and .tflite) are traced from this one function.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax.models import efficientnet_lite
from hecsb_jax.train import saved_model

# Entropy-coded split methods whose edge ends in int32 symbols. CR+BQ sends
# a QuantizedTensor and the image codec an image latent: later work.
SUPPORTED_METHODS = ("hecsb", "svb")


class ExportError(ValueError):
  """A model this export cannot handle; the message says which and why."""


def check_exportable(model: saved_model.SavedModel) -> None:
  """Raises ExportError unless ``model`` has an integer-symbol edge head."""
  if model.method not in SUPPORTED_METHODS:
    raise ExportError(
        f"{model.path}: method {model.method!r} cannot be exported yet:"
        f" export supports {SUPPORTED_METHODS} (entropy-coded split methods"
        " whose edge returns int32 symbols); crbq and neural_codec are"
        " later work")
  if model.tables is None:
    raise ExportError(f"{model.path}: no coding tables (tables.npz); an"
                      f" exported {model.method} head needs them")


def _with_grouped_depthwise(module: nnx.Module) -> nnx.Module:
  """A copy whose depthwise convolutions use the grouped implementation.

  The library's default ("shifted_sum", k*k strided slices, each scaled
  and summed) is the same convolution with the same parameters, chosen
  because XLA's CPU backend runs it faster in training. A converter sees
  it as k*k SLICE + MUL + ADD ops (25 per 5x5 layer); the grouped form
  lowers to one DEPTHWISE_CONV_2D, the op LiteRT's XNNPACK kernels run on
  an edge CPU. The sums differ only in float rounding order (the
  agreement check measures what that does to the symbols).
  """
  module = nnx.clone(module)
  for _, node in nnx.iter_graph(module):
    if isinstance(node, efficientnet_lite.DepthwiseConv):
      node.impl = "grouped"
  return module


def head_function(model: saved_model.SavedModel
                  ) -> Callable[[jax.Array], jax.Array]:
  """The head of ``model`` (module docstring) as a pure function.

  Args:
    model: a loaded hecsb or svb model (`saved_model.load`), eval mode.

  Returns:
    f(pixels float32 [B, S, S, 3] in 0..255) -> int32 [B, h, w, m].

  Raises:
    ExportError: another method, or no tables.
  """
  check_exportable(model)
  graphdef, state = nnx.split(_with_grouped_depthwise(model.module))
  # Exactly `pipeline.normalize` ((x - mean) / std in float32), so that
  # the head sees the inputs the JAX path sees.
  mean = np.asarray(model.norm.mean, np.float32)
  std = np.asarray(model.norm.std, np.float32)

  def head(pixels: jax.Array) -> jax.Array:
    x = (pixels.astype(jnp.float32) - mean) / std
    return nnx.merge(graphdef, state).edge_symbols(x)

  return head


def input_spec(model: saved_model.SavedModel) -> jax.ShapeDtypeStruct:
  """The head's input: float32 [1, S, S, 3] (batch 1, as on a device)."""
  s = model.image_size
  return jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
