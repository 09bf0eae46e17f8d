"""EfficientNet-Lite0, channels-last, with named split points.

    x [B, 224, 224, 3] ─► stem ─► block0 … block15 ─► conv_head ─► pool ─► fc
                          3x3/2   16 MBConv blocks    1x1 conv    mean   1280
                          32 ch   (no SE, ReLU6)      1280 ch     H, W   ─►1000

EfficientNet (Tan & Le, ICML 2019) in its "Lite" form for edge devices:
no squeeze-and-excitation, ReLU6 instead of swish, stem and head widths
fixed at 32 and 1280. Every convolution uses TensorFlow "SAME" padding,
which pads a stride-2 layer asymmetrically (one more pixel after than
before); BatchNorm has epsilon 1e-3. Input is RGB scaled as (x - 127) / 128.

MBConv block (i = index, e = expansion ratio, k = kernel):

    h ─► [1x1 expand to e·C, BN, ReLU6] ─► kxk depthwise/s, BN, ReLU6
      ─► 1x1 project, BN ─► (+ h when stride 1 and C_in == C_out)

Split points, in order: "stem", "block0" … "block15", "conv_head", "pool".
`features(x, until=p)` runs the layers up to and including p and
`tail(h, after=p)` the rest up to the logits; both walk the one layer list
that `__call__` walks, so tail(features(x, p), p) is the whole network.

Depthwise convolutions have two implementations with the same parameters:
"grouped" (one `lax.conv_general_dilated` with feature_group_count = C) and
"shifted_sum" (the sum of k·k strided slices of the padded input, each
scaled per channel). XLA's CPU backend runs the grouped form slowly: on a
2-core x86-64 CPU the jitted forward at batch 16 ran 5-6x faster with
"shifted_sum" (e.g. 37.7 vs 7.2 images/s), so it is the default;
`benchmarks/backbone_accuracy.py` measures both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from hecsb_jax.models import weights

BN_EPSILON = 1e-3
# PyTorch's BatchNorm momentum 0.01 is Flax's 0.99 (weight of the old value).
BN_MOMENTUM = 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEPTHWISE_IMPLS = ("shifted_sum", "grouped")


class Stage(NamedTuple):
  """A run of MBConv blocks; only the first has the stride."""

  kernel: int
  stride: int
  expand: int
  channels: int
  repeats: int


# EfficientNet-B0's stages, which Lite0 keeps (width and depth 1.0).
LITE0_STAGES = (
    Stage(kernel=3, stride=1, expand=1, channels=16, repeats=1),
    Stage(kernel=3, stride=2, expand=6, channels=24, repeats=2),
    Stage(kernel=5, stride=2, expand=6, channels=40, repeats=2),
    Stage(kernel=3, stride=2, expand=6, channels=80, repeats=3),
    Stage(kernel=5, stride=1, expand=6, channels=112, repeats=3),
    Stage(kernel=5, stride=2, expand=6, channels=192, repeats=4),
    Stage(kernel=3, stride=1, expand=6, channels=320, repeats=1),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow "SAME" padding (before, after) for one spatial axis.

  The output has ceil(size / stride) positions; any odd total padding goes
  after, which is what makes stride-2 layers asymmetric.
  """
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


# Jitted on its own so that run eagerly (op by op) it is one compiled call,
# not k*k separately compiled slices; inside an outer jit it is inlined.
@functools.partial(jax.jit, static_argnames="stride")
def depthwise_shifted_sum(
    x: jax.Array, kernel: jax.Array, stride: int
) -> jax.Array:
  """Depthwise convolution as a sum of k·k shifted, scaled copies of x.

  Args:
    x: [B, H, W, C] float32.
    kernel: [k, k, 1, C] float32 (HWIO with one input channel per group).
    stride: spatial stride.

  Returns:
    [B, ceil(H / stride), ceil(W / stride), C]; equal (up to float rounding)
    to the grouped convolution with "SAME" padding.
  """
  _, height, width, _ = x.shape
  k = kernel.shape[0]
  pad_h = same_padding(height, k, stride)
  pad_w = same_padding(width, k, stride)
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  out_h, out_w = -(-height // stride), -(-width // stride)
  y = None
  for a in range(k):
    for b in range(k):
      tap = (
          jax.lax.slice(
              xp,
              (0, a, b, 0),
              (
                  xp.shape[0],
                  a + (out_h - 1) * stride + 1,
                  b + (out_w - 1) * stride + 1,
                  xp.shape[3],
              ),
              (1, stride, stride, 1),
          )
          * kernel[a, b, 0]
      )
      y = tap if y is None else y + tap
  return y


def depthwise_grouped(
    x: jax.Array, kernel: jax.Array, stride: int
) -> jax.Array:
  """The same depthwise convolution as one grouped XLA convolution."""
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      (stride, stride),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1],
  )


class DepthwiseConv(nnx.Module):
  """k x k depthwise convolution without bias, "SAME" padding."""

  def __init__(
      self,
      channels: int,
      kernel: int,
      stride: int,
      *,
      impl: str = "shifted_sum",
      rngs: nnx.Rngs,
  ):
    if impl not in DEPTHWISE_IMPLS:
      raise ValueError(f"impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, 1, channels)))
    self.stride = stride
    self.impl = impl

  def __call__(self, x: jax.Array) -> jax.Array:
    fn = (
        depthwise_shifted_sum
        if self.impl == "shifted_sum"
        else (depthwise_grouped)
    )
    return fn(x, self.kernel[...], self.stride)


def _conv1x1(c_in: int, c_out: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(c_in, c_out, (1, 1), use_bias=False, rngs=rngs)


def _norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # Built in inference mode: a pretrained backbone is mostly run frozen;
  # model.train() switches to batch statistics.
  return nnx.BatchNorm(
      channels,
      epsilon=BN_EPSILON,
      momentum=BN_MOMENTUM,
      use_running_average=True,
      rngs=rngs,
  )


class Stem(nnx.Module):
  """3x3 stride-2 convolution to 32 channels, BatchNorm, ReLU6."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(
        3,
        STEM_CHANNELS,
        (3, 3),
        strides=2,
        padding="SAME",
        use_bias=False,
        rngs=rngs,
    )
    self.norm = _norm(STEM_CHANNELS, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu6(self.norm(self.conv(x)))


class MBConv(nnx.Module):
  """Mobile inverted bottleneck without squeeze-excite (see module doc)."""

  def __init__(
      self,
      c_in: int,
      c_out: int,
      *,
      kernel: int,
      stride: int,
      expand: int,
      depthwise_impl: str,
      rngs: nnx.Rngs,
  ):
    hidden = c_in * expand
    if expand != 1:
      self.expand_conv = _conv1x1(c_in, hidden, rngs)
      self.expand_norm = _norm(hidden, rngs)
    else:
      self.expand_conv = self.expand_norm = None
    self.depthwise = DepthwiseConv(
        hidden, kernel, stride, impl=depthwise_impl, rngs=rngs
    )
    self.depthwise_norm = _norm(hidden, rngs)
    self.project_conv = _conv1x1(hidden, c_out, rngs)
    self.project_norm = _norm(c_out, rngs)
    self.residual = stride == 1 and c_in == c_out

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    if self.expand_conv is not None:
      h = jax.nn.relu6(self.expand_norm(self.expand_conv(h)))
    h = jax.nn.relu6(self.depthwise_norm(self.depthwise(h)))
    h = self.project_norm(self.project_conv(h))
    # Inference only: no drop-connect on the residual branch.
    return x + h if self.residual else h


class ConvHead(nnx.Module):
  """1x1 convolution to 1280 channels, BatchNorm, ReLU6."""

  def __init__(self, c_in: int, rngs: nnx.Rngs):
    self.conv = _conv1x1(c_in, HEAD_CHANNELS, rngs)
    self.norm = _norm(HEAD_CHANNELS, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu6(self.norm(self.conv(x)))


def global_average_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C] mean over the spatial axes."""
  return jnp.mean(x, axis=(1, 2))


class EfficientNetLite0(nnx.Module):
  """EfficientNet-Lite0 classifier with named split points (module doc).

  Attributes:
    stem, blocks (16 MBConv), conv_head, fc: the layers, named as in
      `split_points` (blocks[i] is "block{i}").
  """

  def __init__(
      self,
      num_classes: int = 1000,
      *,
      stages: Sequence[Stage] = LITE0_STAGES,
      depthwise_impl: str = "shifted_sum",
      rngs: nnx.Rngs,
  ):
    self.stem = Stem(rngs)
    blocks = []
    c_in = STEM_CHANNELS
    for stage in stages:
      for r in range(stage.repeats):
        blocks.append(
            MBConv(
                c_in,
                stage.channels,
                kernel=stage.kernel,
                stride=stage.stride if r == 0 else 1,
                expand=stage.expand,
                depthwise_impl=depthwise_impl,
                rngs=rngs,
            )
        )
        c_in = stage.channels
    self.blocks = nnx.List(blocks)
    self.conv_head = ConvHead(c_in, rngs)
    self.fc = nnx.Linear(HEAD_CHANNELS, num_classes, rngs=rngs)

  def _layers(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
    """(split point, layer) in order; the classifier `fc` comes after."""
    return (
        [("stem", self.stem)]
        + [(f"block{i}", b) for i, b in enumerate(self.blocks)]
        + [("conv_head", self.conv_head), ("pool", global_average_pool)]
    )

  @property
  def split_points(self) -> tuple[str, ...]:
    """Names `features` and `tail` accept, input side first."""
    return tuple(name for name, _ in self._layers())

  def _index(self, point: str) -> int:
    names = self.split_points
    if point not in names:
      raise ValueError(
          f"unknown split point {point!r}; expected one of {names}"
      )
    return names.index(point)

  def set_depthwise_impl(self, impl: str) -> None:
    """Switches every depthwise convolution to `impl` (same parameters)."""
    if impl not in DEPTHWISE_IMPLS:
      raise ValueError(f"impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
    for block in self.blocks:
      block.depthwise.impl = impl

  def features(self, x: jax.Array, until: str) -> jax.Array:
    """Runs the layers up to and including split point `until`.

    Args:
      x: [B, H, W, 3] float32, RGB scaled as (x - 127) / 128.
      until: a name in `split_points`.

    Returns:
      [B, h, w, c] float32 feature map ([B, 1280] for "pool").
    """
    stop = self._index(until)
    for _, layer in self._layers()[: stop + 1]:
      x = layer(x)
    return x

  def tail(self, h: jax.Array, after: str) -> jax.Array:
    """Runs the layers after split point `after`, through to the logits.

    Args:
      h: what `features(x, until=after)` returns.
      after: a name in `split_points`.

    Returns:
      [B, num_classes] float32 logits.
    """
    start = self._index(after) + 1
    for _, layer in self._layers()[start:]:
      h = layer(h)
    return self.fc(h)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] float32 images -> [B, num_classes] float32 logits."""
    for _, layer in self._layers():
      x = layer(x)
    return self.fc(x)


def torch_state_dict_mapping(
    model: EfficientNetLite0,
) -> dict[str, weights.Entry]:
  """Tensor names of the PyTorch EfficientNet-Lite port -> model variables.

  The names are those of `efficientnet_lite_pytorch` (a port of
  lukemelas/EfficientNet-PyTorch): `_conv_stem`, `_bn0`,
  `_blocks.N._{expand_conv,bn0,depthwise_conv,bn1,project_conv,bn2}`,
  `_conv_head`, `_bn1`, `_fc`. Use with `weights.assign_state_dict`.
  """
  m = {
      **weights.conv("_conv_stem", ("stem", "conv")),
      **weights.batch_norm("_bn0", ("stem", "norm")),
      **weights.conv("_conv_head", ("conv_head", "conv")),
      **weights.batch_norm("_bn1", ("conv_head", "norm")),
      **weights.linear("_fc", ("fc",)),
  }
  for i, block in enumerate(model.blocks):
    src, dst = f"_blocks.{i}", ("blocks", i)
    if block.expand_conv is not None:
      m |= weights.conv(f"{src}._expand_conv", (*dst, "expand_conv"))
      m |= weights.batch_norm(f"{src}._bn0", (*dst, "expand_norm"))
    m |= weights.conv(f"{src}._depthwise_conv", (*dst, "depthwise"))
    m |= weights.batch_norm(f"{src}._bn1", (*dst, "depthwise_norm"))
    m |= weights.conv(f"{src}._project_conv", (*dst, "project_conv"))
    m |= weights.batch_norm(f"{src}._bn2", (*dst, "project_norm"))
  return m
