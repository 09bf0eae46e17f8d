"""ResNet-50 (torchvision's v1.5 layout), channels-last, cut at named points.

    x [B, H, W, 3] normalized RGB
      │ stem: conv 7×7/2 (64) → BN → ReLU → max-pool 3×3/2 (pad 1)
      ▼                                    "stem"   [B, H/4,  W/4,    64]
    layer1: 3 bottlenecks, stride 1        "layer1" [B, H/4,  W/4,   256]
    layer2: 4 bottlenecks, stride 2        "layer2" [B, H/8,  W/8,   512]
    layer3: 6 bottlenecks, stride 2        "layer3" [B, H/16, W/16, 1024]
    layer4: 3 bottlenecks, stride 2        "layer4" [B, H/32, W/32, 2048]
      │ global average pool → fc 2048 → num_classes
      ▼
    logits [B, num_classes]

    features(x, until="layer2") ──► h ──► tail(h, after="layer2") == model(x)

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016). The
default is torchvision's "v1.5" variant: a downsampling bottleneck puts its
stride in the 3×3 convolution, not in the first 1×1 as the paper (and
`keras.applications.ResNet50`) does; `stride_in_1x1=True` gives the latter.
BatchNorm epsilon is torchvision's 1e-5 unless `bn_epsilon` says otherwise.
The HECS-B paper splits after `layer2` (stride 8, 512 channels).

Inputs are normalized outside the model: `TORCHVISION_PREPROCESSING` holds
the constants and `normalize` applies them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

# The points at which the network may be cut, in forward order. Each names
# the output of that stage.
SPLIT_POINTS = ("stem", "layer1", "layer2", "layer3", "layer4")
# Channels and total stride of the feature map at each split point (for the
# default ResNet-50 widths).
SPLIT_CHANNELS = {
    "stem": 64,
    "layer1": 256,
    "layer2": 512,
    "layer3": 1024,
    "layer4": 2048,
}
SPLIT_STRIDES = {
    "stem": 4,
    "layer1": 4,
    "layer2": 8,
    "layer3": 16,
    "layer4": 32,
}

_EXPANSION = 4
_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How images are prepared for a classifier (data, not model code).

  Attributes:
    mean: per-channel RGB mean subtracted from pixels scaled to [0, 1].
    std: per-channel RGB standard deviation divided out after that.
    resize_size: shorter side after resizing, for evaluation.
    crop_size: side of the centre crop taken after resizing.
    interpolation: resampling filter of the resize.
  """

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  resize_size: int
  crop_size: int
  interpolation: str


# torchvision's ImageNet weights (IMAGENET1K_V1): RGB in [0, 1], resize the
# shorter side to 256 (bilinear), centre crop 224, then (x - mean) / std.
TORCHVISION_PREPROCESSING = Preprocessing(
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    resize_size=256,
    crop_size=224,
    interpolation="bilinear",
)


def normalize(
    images: jax.Array, preprocessing: Preprocessing = TORCHVISION_PREPROCESSING
) -> jax.Array:
  """Per-channel standardization of RGB images.

  Args:
    images: [..., H, W, 3] float RGB in [0, 1].
    preprocessing: the constants; torchvision's by default.

  Returns:
    [..., H, W, 3] float32, (images - mean) / std.
  """
  mean = jnp.asarray(preprocessing.mean, jnp.float32)
  std = jnp.asarray(preprocessing.std, jnp.float32)
  return (jnp.asarray(images, jnp.float32) - mean) / std


def _conv(in_features, out_features, kernel_size, stride, *, rngs):
  """Bias-free convolution with torch's symmetric padding of k // 2."""
  pad = kernel_size // 2
  return nnx.Conv(
      in_features,
      out_features,
      (kernel_size, kernel_size),
      strides=stride,
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
      kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
      rngs=rngs,
  )


def _batch_norm(num_features, epsilon, *, rngs):
  # torch's momentum 0.1 weighs the new batch; flax's weighs the old stats.
  return nnx.BatchNorm(num_features, momentum=0.9, epsilon=epsilon, rngs=rngs)


class Downsample(nnx.Module):
  """The projection shortcut: 1×1 convolution with stride, then BatchNorm."""

  def __init__(self, in_features, out_features, stride, epsilon, *, rngs):
    self.conv = _conv(in_features, out_features, 1, stride, rngs=rngs)
    self.bn = _batch_norm(out_features, epsilon, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class Bottleneck(nnx.Module):
  """1×1 reduce → 3×3 → 1×1 expand (×4), each BatchNormed, plus shortcut."""

  def __init__(
      self,
      in_features: int,
      width: int,
      stride: int,
      *,
      stride_in_1x1: bool,
      bn_epsilon: float,
      rngs: nnx.Rngs,
  ):
    out_features = width * _EXPANSION
    stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
    self.conv1 = _conv(in_features, width, 1, stride_1x1, rngs=rngs)
    self.bn1 = _batch_norm(width, bn_epsilon, rngs=rngs)
    self.conv2 = _conv(width, width, 3, stride_3x3, rngs=rngs)
    self.bn2 = _batch_norm(width, bn_epsilon, rngs=rngs)
    self.conv3 = _conv(width, out_features, 1, 1, rngs=rngs)
    self.bn3 = _batch_norm(out_features, bn_epsilon, rngs=rngs)
    if stride != 1 or in_features != out_features:
      self.downsample = Downsample(
          in_features, out_features, stride, bn_epsilon, rngs=rngs
      )
    else:
      self.downsample = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = jax.nn.relu(self.bn2(self.conv2(h)))
    h = self.bn3(self.conv3(h))
    shortcut = x if self.downsample is None else self.downsample(x)
    return jax.nn.relu(h + shortcut)


class ResNet(nnx.Module):
  """Bottleneck ResNet; ResNet-50 by default. See the module docstring.

  Attribute names follow torchvision's (`conv1`, `bn1`, `layer1`…`layer4`,
  `fc`) so that its state-dict names map onto them one to one
  (`hecsb_jax.models.resnet_import`). BatchNorm uses batch statistics until
  `model.eval()` is called, as in torch.
  """

  def __init__(
      self,
      num_classes: int = 1000,
      *,
      stage_sizes: Sequence[int] = (3, 4, 6, 3),
      stride_in_1x1: bool = False,
      bn_epsilon: float = 1e-5,
      rngs: nnx.Rngs,
  ):
    """Builds the network with freshly initialized parameters.

    Args:
      num_classes: width of the classifier.
      stage_sizes: bottlenecks in layer1..layer4; (3, 4, 6, 3) is ResNet-50,
        (3, 4, 23, 3) ResNet-101.
      stride_in_1x1: True for the original v1 layout (Keras), False for
        torchvision's v1.5.
      bn_epsilon: BatchNorm epsilon (torchvision 1e-5, Keras 1.001e-5).
      rngs: initialization keys.
    """
    if len(stage_sizes) != 4:
      raise ValueError(f"stage_sizes must have 4 entries, got {stage_sizes}")
    self.conv1 = nnx.Conv(
        3,
        64,
        (7, 7),
        strides=2,
        padding=((3, 3), (3, 3)),
        use_bias=False,
        kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
        rngs=rngs,
    )
    self.bn1 = _batch_norm(64, bn_epsilon, rngs=rngs)
    in_features = 64
    stages = []
    for size, width, stride in zip(
        stage_sizes, _STAGE_WIDTHS, _STAGE_STRIDES, strict=True
    ):
      blocks = []
      for i in range(size):
        blocks.append(
            Bottleneck(
                in_features,
                width,
                stride if i == 0 else 1,
                stride_in_1x1=stride_in_1x1,
                bn_epsilon=bn_epsilon,
                rngs=rngs,
            )
        )
        in_features = width * _EXPANSION
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = nnx.Linear(in_features, num_classes, rngs=rngs)

  @property
  def split_points(self) -> tuple[str, ...]:
    """Names `features` and `tail` accept, input side first."""
    return SPLIT_POINTS

  def _stage(self, name: str, x: jax.Array) -> jax.Array:
    if name == "stem":
      x = jax.nn.relu(self.bn1(self.conv1(x)))
      # Max-pool pads with -inf, as torch's MaxPool2d(3, 2, padding=1).
      return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in getattr(self, name):
      x = block(x)
    return x

  def features(self, x: jax.Array, until: str = "layer4") -> jax.Array:
    """Runs the network up to and including the split point `until`.

    Args:
      x: [B, H, W, 3] float32 normalized images (see `normalize`).
      until: one of `SPLIT_POINTS`.

    Returns:
      [B, H / s, W / s, C] float32 with s = SPLIT_STRIDES[until] and
      C = SPLIT_CHANNELS[until] (sizes rounded up at each stride 2).
    """
    last = _check_split_point(until)
    for name in SPLIT_POINTS[: last + 1]:
      x = self._stage(name, x)
    return x

  def tail(self, h: jax.Array, after: str) -> jax.Array:
    """Runs the rest of the network from the output of split point `after`.

    Args:
      h: [B, h, w, C] float32, what `features(x, until=after)` returned.
      after: one of `SPLIT_POINTS`.

    Returns:
      [B, num_classes] float32 logits.
    """
    first = _check_split_point(after) + 1
    for name in SPLIT_POINTS[first:]:
      h = self._stage(name, h)
    return self.fc(jnp.mean(h, axis=(1, 2)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] float32 normalized images -> [B, num_classes] logits."""
    return self.tail(self.features(x, until="layer4"), after="layer4")


def _check_split_point(name: str) -> int:
  if name not in SPLIT_POINTS:
    raise ValueError(
        f"unknown split point {name!r}; expected one of {SPLIT_POINTS}"
    )
  return SPLIT_POINTS.index(name)


def resnet50(
    num_classes: int = 1000,
    *,
    stride_in_1x1: bool = False,
    bn_epsilon: float = 1e-5,
    rngs: nnx.Rngs,
) -> ResNet:
  """ResNet-50: stage sizes (3, 4, 6, 3); torchvision's layout by default."""
  return ResNet(
      num_classes,
      stage_sizes=(3, 4, 6, 3),
      stride_in_1x1=stride_in_1x1,
      bn_epsilon=bn_epsilon,
      rngs=rngs,
  )
