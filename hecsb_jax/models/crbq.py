"""CR+BQ: channel reduction + 8-bit bottleneck quantization.

    edge                                                        server
    x [B, H, W, 3] ─► acquisition ─► a [B, h, w, C_a]
                  ─► reduction: [3×3 conv, ReLU] × r, 1×1 conv
                                                   z [B, h, w, k]
                  ─► per image: lo = min(min z, 0), hi = max(max z, 0)
                       scale = (hi − lo) / 255, zero_point = round(−lo / scale)
                       codes = clip(round(z / scale) + zero_point, 0, 255)
                  ─► to_bytes: header (16 B) + codes (h·w·k B) ─► bytes ─►
                       z_hat = (codes − zero_point) · scale ─► decoder ─►
                       features [B, h, w, C_t] (the teacher's at the split)

The simplest learned baseline of split computing: Matsubara & Levorato,
"Neural compression and filtering for edge-assisted real-time object
detection in challenged networks" (ICPR 2020; bottleneck quantization), and
the "CR + BQ" baseline of Matsubara et al., "SC2 Benchmark: supervised
compression for split computing" (TMLR 2023). A head with few output
channels (k, ``bottleneck_channels``, e.g. 6 ... 24) is trained by head
distillation to let a decoder reproduce the teacher's features; its output
is quantized to 8 bits, uniformly, with one scale and zero point per image
computed from the tensor's min and max and sent with it. No entropy coding:
the payload is exactly header + h·w·k bytes whatever the image, so the
reported ``bits`` is that size (a constant, with no gradient) and the rate
is set by k alone. Stage 1 is therefore MSE only (``beta`` = 0; any β only
shifts the reported loss).

Quantization in training: none by default (``quantize_in_training=False``),
as in Matsubara et al., who quantize after training. The 8-bit step
(range / 255) is small against the distillation error, and without it the
per-image min and max, which set every element's step, stay out of the
forward pass. Wherever a call runs with ``training=False`` (``.eval()``, and
stage 2, which by default rounds: `make_stage2_loss(noisy=False)`), the
forward pass is the exact dequantized tensor the server receives, with a
straight-through gradient, so stage 2 fine-tunes the decoder and tail on
what they will see. ``quantize_in_training=True`` uses it in training too.

The range includes 0 (as in PyTorch's and TFLite's asymmetric quantization),
so the zero point is an integer in [0, 255] and every value of z is within
scale / 2 of its dequantized value.

Byte layout of one image's tensor (little-endian, no padding):

    "CRBQ" | version u8 (1) | h u16 | w u16 | k u16 | scale f32
    | zero_point u8 | codes u8 [h, w, k] (row-major, channels last)

The byte functions (`to_bytes`, `from_bytes`, `pack`, `unpack`,
`num_bytes`) use numpy only, as the edge would.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax.models.hecsb_bottleneck import FeatureDecoder

MAGIC = b"CRBQ"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBHHHfB")
HEADER_SIZE = _HEADER.size  # 16 bytes
_MAX_CODE = 255
_MAX_DIM = 0xFFFF


class QuantizedTensor(NamedTuple):
  """Codes with their per-image scale and zero point (numpy or JAX).

  Attributes:
    codes: [..., h, w, k] uint8.
    scale: [...] float32, > 0.
    zero_point: [...] uint8, the code of 0.
  """

  codes: Any
  scale: Any
  zero_point: Any


def quantize(z: Any, xp: Any = jnp) -> QuantizedTensor:
  """8-bit per-tensor quantization over the last three axes.

  Args:
    z: [..., h, w, k] float32 (one image, or a batch).
    xp: `jax.numpy` or `numpy`; both compute the same float32 operations.

  Returns:
    `QuantizedTensor` with codes [..., h, w, k] and scale, zero_point [...].
  """
  z = xp.asarray(z, xp.float32)
  axes = (-3, -2, -1)
  lo = xp.minimum(xp.min(z, axis=axes), xp.float32(0))
  hi = xp.maximum(xp.max(z, axis=axes), xp.float32(0))
  # A product with the float32 reciprocal, not a division: XLA rewrites a
  # division by a constant into that product and numpy does not, and the
  # two must agree bit for bit.
  scale = (hi - lo) * xp.float32(1.0 / _MAX_CODE)
  # An all-zero tensor: any positive scale codes it exactly (as zero_point).
  scale = xp.where(scale > 0, scale, xp.float32(1)).astype(xp.float32)
  zero_point = xp.clip(xp.round(-lo / scale), 0, _MAX_CODE)
  codes = xp.clip(xp.round(z / scale[..., None, None, None])
                  + zero_point[..., None, None, None], 0, _MAX_CODE)
  return QuantizedTensor(codes.astype(xp.uint8), scale,
                         zero_point.astype(xp.uint8))


def dequantize(q: QuantizedTensor, xp: Any = jnp) -> Any:
  """(codes − zero_point) · scale, [..., h, w, k] float32."""
  # Integers below 2^24 and their difference are exact in float32: the only
  # rounding is the product, the same in numpy and JAX.
  diff = (xp.asarray(q.codes).astype(xp.float32)
          - xp.asarray(q.zero_point).astype(xp.float32)[..., None, None, None])
  return diff * xp.asarray(q.scale, xp.float32)[..., None, None, None]


def fake_quantize(z: jax.Array) -> jax.Array:
  """dequantize(quantize(z)) in the forward pass, gradient 1 (straight
  through); scale and zero point are constants for the gradient.

  Args:
    z: [B, h, w, k] float32.

  Returns:
    [B, h, w, k] float32, bit for bit the tensor the server dequantizes.
  """
  z_hat = jax.lax.stop_gradient(dequantize(quantize(z)))
  # z - stop_gradient(z) is exactly 0 forward, so the sum is z_hat exactly.
  return z_hat + (z - jax.lax.stop_gradient(z))


def num_bytes(shape: tuple[int, int, int]) -> int:
  """Bytes of one image's tensor of ``shape`` (h, w, k): header + h·w·k."""
  if len(shape) != 3:
    raise ValueError(f"shape must be (h, w, k), got {tuple(shape)}")
  return HEADER_SIZE + math.prod(int(d) for d in shape)


# ----------------------------------------------------------------- bytes


def pack(q: QuantizedTensor) -> bytes:
  """One image's `QuantizedTensor` (codes [h, w, k]) -> bytes.

  Raises:
    ValueError: wrong ranks or dtypes, a dimension outside 1 ... 65535, or a
      scale that is not positive and finite.
  """
  codes = np.asarray(q.codes)
  if codes.ndim != 3 or codes.dtype != np.uint8:
    raise ValueError(f"codes must be [h, w, k] uint8 (one image), got"
                     f" {codes.dtype} {codes.shape}")
  if not all(1 <= d <= _MAX_DIM for d in codes.shape):
    raise ValueError(f"each dimension must be in 1 ... {_MAX_DIM}, got"
                     f" {codes.shape}")
  scale = np.asarray(q.scale, np.float32)
  zero_point = np.asarray(q.zero_point)
  if scale.shape != () or zero_point.shape != ():
    raise ValueError("scale and zero_point must be scalars (one image)")
  if not (np.isfinite(scale) and scale > 0):
    raise ValueError(f"scale must be positive and finite, got {scale}")
  if not 0 <= int(zero_point) <= _MAX_CODE:
    raise ValueError(f"zero_point must be in 0 ... 255, got {zero_point}")
  header = _HEADER.pack(MAGIC, FORMAT_VERSION, *codes.shape, float(scale),
                        int(zero_point))
  return header + np.ascontiguousarray(codes).tobytes()


def unpack(data: Any, *, shape: tuple[int, int, int] | None = None
           ) -> QuantizedTensor:
  """bytes made by `pack` -> `QuantizedTensor` (numpy, one image).

  Args:
    data: bytes, bytearray or memoryview.
    shape: the (h, w, k) the caller expects; None accepts any.

  Raises:
    ValueError: naming the fault: truncated header or payload, trailing
      bytes, wrong magic, unsupported version, a corrupt field (zero
      dimension, scale not positive and finite), or a shape other than
      ``shape``.
  """
  view = memoryview(data).cast("B")
  size = view.nbytes
  if size < HEADER_SIZE:
    raise ValueError(f"truncated CR+BQ tensor: {size} bytes, shorter than"
                     f" the {HEADER_SIZE}-byte header")
  magic, version, h, w, k, scale, zero_point = _HEADER.unpack_from(view)
  if magic != MAGIC:
    raise ValueError(f"not a CR+BQ tensor: magic {magic!r}, expected"
                     f" {MAGIC!r}")
  if version != FORMAT_VERSION:
    raise ValueError(f"unsupported CR+BQ version {version} (this reader"
                     f" knows {FORMAT_VERSION})")
  if 0 in (h, w, k):
    raise ValueError(f"corrupt CR+BQ header: shape {(h, w, k)} has a zero"
                     " dimension")
  if not (math.isfinite(scale) and scale > 0):
    raise ValueError(f"corrupt CR+BQ header: scale {scale} is not positive"
                     " and finite")
  if shape is not None and tuple(shape) != (h, w, k):
    raise ValueError(f"CR+BQ tensor of shape {(h, w, k)}, expected"
                     f" {tuple(shape)}")
  expected = num_bytes((h, w, k))
  if size < expected:
    raise ValueError(f"truncated CR+BQ payload: {size} bytes, the header"
                     f" announces {expected} for shape {(h, w, k)}")
  if size > expected:
    raise ValueError(f"{size - expected} trailing bytes after a CR+BQ"
                     f" tensor of shape {(h, w, k)}")
  codes = np.frombuffer(view[HEADER_SIZE:], np.uint8).reshape(h, w, k)
  return QuantizedTensor(codes.copy(), np.float32(scale), np.uint8(zero_point))


def to_bytes(tensor: Any) -> bytes:
  """One image's float tensor [h, w, k] -> quantized bytes (numpy only).

  Raises:
    ValueError: not 3-D, or not finite, or a dimension outside 1 ... 65535.
  """
  z = np.asarray(tensor, np.float32)
  if z.ndim != 3:
    raise ValueError(f"tensor must be [h, w, k] (one image), got {z.shape}")
  if not np.all(np.isfinite(z)):
    raise ValueError("tensor has non-finite values")
  return pack(quantize(z, xp=np))


def from_bytes(data: Any, *, shape: tuple[int, int, int] | None = None
               ) -> np.ndarray:
  """bytes from `to_bytes` -> dequantized [h, w, k] float32 (`unpack` says
  which ValueErrors)."""
  return dequantize(unpack(data, shape=shape), xp=np)


def pack_batch(q: QuantizedTensor) -> list[bytes]:
  """A batch (codes [B, h, w, k], e.g. from `edge_symbols`) -> B payloads."""
  q = QuantizedTensor(*(np.asarray(a) for a in q))
  return [pack(QuantizedTensor(q.codes[i], q.scale[i], q.zero_point[i]))
          for i in range(q.codes.shape[0])]


def unpack_batch(payloads: list[Any], *,
                 shape: tuple[int, int, int] | None = None
                 ) -> QuantizedTensor:
  """B payloads of one shape -> a batch `QuantizedTensor` (numpy)."""
  parts = [unpack(p, shape=shape) for p in payloads]
  if not parts:
    raise ValueError("no payloads")
  return QuantizedTensor(*(np.stack(a) for a in zip(*parts)))


# ----------------------------------------------------------------- model


class ChannelReduction(nnx.Module):
  """[B, h, w, C_a] -> z [B, h, w, k]: ``hidden_layers`` × (3×3 conv at
  C_a, ReLU), then a 1×1 conv to k channels (linear, so z has both signs)."""

  def __init__(self, in_channels: int, bottleneck_channels: int, *,
               hidden_layers: int = 0, rngs: nnx.Rngs):
    """Args: in_channels: C_a; bottleneck_channels: k; hidden_layers: r;
    rngs: initialization keys."""
    if bottleneck_channels < 1:
      raise ValueError(f"bottleneck_channels must be positive, got"
                       f" {bottleneck_channels}")
    he = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
    self.hidden = nnx.List([
        nnx.Conv(in_channels, in_channels, (3, 3), padding="SAME",
                 kernel_init=he, rngs=rngs)
        for _ in range(hidden_layers)
    ])
    self.conv_out = nnx.Conv(in_channels, bottleneck_channels, (1, 1),
                             rngs=rngs)

  def __call__(self, a: jax.Array) -> jax.Array:
    for conv in self.hidden:
      a = jax.nn.relu(conv(a))
    return self.conv_out(a)


class CrbqBottleneck(nnx.Module):
  """Acquisition + channel reduction + 8-bit quantization + decoder.

  The `HecsbBottleneck` interface, so `SplitModel` and the distillation
  losses drive it unchanged; its symbols are a `QuantizedTensor` (a pytree)
  instead of int32 entropy-coder symbols, and it has no ``entropy``: its
  bytes come from `pack_batch` / `to_bytes`, not `coding.compress`.

  Attributes:
    acquisition: image -> [B, h, w, C_a] (`TeacherPrefix`,
      `ShallowAcquisition`, or any module).
    reduction: `ChannelReduction`, C_a -> k.
    decoder: `FeatureDecoder`, k -> C_t.
    quantize_in_training: straight-through quantization in training too.
    deterministic: quantize (True) or not (False) by default; set by
      ``.eval()`` / ``.train()``.
  """

  def __init__(
      self,
      acquisition: nnx.Module,
      acquisition_channels: int,
      bottleneck_channels: int,
      feature_channels: int,
      *,
      reduction_layers: int = 0,
      decoder_width: int = 128,
      decoder_blocks: int = 1,
      quantize_in_training: bool = False,
      rngs: nnx.Rngs,
  ):
    """Builds the head and the decoder around an acquisition network.

    Args:
      acquisition: maps [B, H, W, 3] to [B, h, w, acquisition_channels].
      acquisition_channels: C_a.
      bottleneck_channels: k, channels of the quantized tensor.
      feature_channels: C_t, channels of the teacher at the split.
      reduction_layers: 3×3 conv + ReLU layers before the 1×1 reduction.
      decoder_width, decoder_blocks: see `FeatureDecoder`.
      quantize_in_training: see the module docstring.
      rngs: initialization keys.
    """
    self.acquisition = acquisition
    self.reduction = ChannelReduction(
        acquisition_channels, bottleneck_channels,
        hidden_layers=reduction_layers, rngs=rngs)
    self.decoder = FeatureDecoder(
        bottleneck_channels, feature_channels, width=decoder_width,
        blocks=decoder_blocks, rngs=rngs)
    self.bottleneck_channels = bottleneck_channels
    self.quantize_in_training = bool(quantize_in_training)
    self.deterministic = False

  def measure(self, x: jax.Array, features: jax.Array | None = None
              ) -> jax.Array:
    """Acquisition then reduction, before quantization.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      features: [B, h, w, C_a] float32 precomputed acquisition output; when
        given, ``x`` is ignored.

    Returns:
      z [B, h, w, k] float32.
    """
    a = self.acquisition(x) if features is None else features
    return self.reduction(a)

  def encode(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
      features: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The edge's output: z, or its straight-through 8-bit quantization.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      rng: unused (the `HecsbBottleneck` signature).
      training: True: z itself (or quantized with
        ``quantize_in_training``); False: quantized. None follows
        ``not self.deterministic``.
      features: see `measure`.

    Returns:
      (z_q, aux): z_q [B, h, w, k] float32; aux holds ``y`` (z), ``y_hat``
      (when quantized) and ``bits`` [B] float32, 8 × `num_bytes`: the
      exact payload, a constant.
    """
    del rng
    if training is None:
      training = not self.deterministic
    z = self.measure(x, features)
    bits = jnp.full((z.shape[0],), 8.0 * num_bytes(z.shape[1:]),
                    jnp.float32)
    aux = {"y": z, "bits": bits}
    if training and not self.quantize_in_training:
      return z, aux
    aux["y_hat"] = fake_quantize(z)
    return aux["y_hat"], aux

  def decode(self, z_q: jax.Array) -> jax.Array:
    """[B, h, w, k] float32 -> [B, h, w, C_t] float32 teacher features."""
    return self.decoder(z_q)

  def __call__(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encode then decode: (features [B, h, w, C_t], aux as `encode`)."""
    z_q, aux = self.encode(x, rng, training=training)
    return self.decode(z_q), aux

  def edge_symbols(self, x: jax.Array) -> QuantizedTensor:
    """What the edge sends: codes [B, h, w, k] uint8, scale and zero_point
    [B] (`pack_batch` turns it into bytes)."""
    return quantize(self.measure(x))

  def decode_symbols(self, q: QuantizedTensor) -> jax.Array:
    """A batch `QuantizedTensor` -> features [B, h, w, C_t] float32."""
    return self.decode(dequantize(q))

  def project_(self) -> None:
    """No constraint to restore (the `SplitModel` bottleneck interface)."""
