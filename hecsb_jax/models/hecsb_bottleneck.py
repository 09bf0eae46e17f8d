"""The HECS-B bottleneck: edge encoder and server decoder of a split network.

    edge                                                       server
    x [B, H, W, 3] ─► acquisition ─► a [B, h, w, C_a]
                      (ShallowAcquisition from scratch, or the teacher's
                       own layers before the split: TeacherPrefix)
                  ─► measurement: y = W a, 1×1 conv, no bias,
                     ‖W‖_F <= sqrt(m C_a)              y [B, h, w, m]
                  ─► EntropyBottleneck: y + U(-½, ½) (training)
                                        round(y)       (test, coding)
                  ─► int32 symbols ─► coding.compress ─► bytes ─►
                                        y_hat [B, h, w, m] ─► decoder ─►
                                        features [B, h, w, C_t] (the
                                        teacher's feature map at the split)

HECS-B (paper §3.3) moves statistical compressed sensing (Grover & Ermon,
AISTATS 2019; `hecsb_jax.cs.measurement`) into a split network: the signal
measured at every position of the split-resolution grid is the acquisition
network's feature vector, and the operator is the same matrix W ∈ R^{m×C_a}
for every position, i.e. a 1×1 convolution. As in the CS experiment W is
kept from winning against the unit quantization step by growing: its
Frobenius norm is held at most at sqrt(m C_a) by projection after each
optimizer step (`project_`). The channel noise of the CS experiment is the
quantization noise here: uniform in training, rounding at test, under the
factorized prior of Ballé et al. (2018) (`hecsb_jax.entropy`).

Decoder (server side; our choice, the paper gives no architecture): a 3×3
convolution from the m measurement channels to `decoder_width`, ReLU, then
`decoder_blocks` residual blocks (3×3 conv, ReLU, 3×3 conv, + skip, ReLU),
then a 1×1 convolution to the teacher's C_t channels, all at the split
resolution and without normalization (the decoder's input statistics are
set by the rate term and would change under BatchNorm between the stages).
The 3×3 layers let each output position use the measurements of its
neighbours, which a per-position (1×1) inverse could not: with m < C_a the
missing dimensions are recovered from spatial context, the amortized
decoder of the CS setting.

Optionally (``decoder_skip``) a linear 1×1 path from the measurements to
the features is added to that output, and W and the path start at the
features' principal directions (`principal_directions`,
`HecsbBottleneck.start_at_principal_directions_`): the best rank-m linear
code of the features (PCA; 5.6% relative error at m = 32 on block4, where
the random start's training ends at ~13%), so the nonlinear layers learn
only what the linear path misses.

Mode: `nnx.Module.train()` / `.eval()` set `deterministic`, which chooses
noise (False) or rounding (True) when a call does not say `training=`.
"""

from __future__ import annotations

import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax.cs.measurement import frobenius_bound
from hecsb_jax.cs.measurement import project_to_frobenius_ball
from hecsb_jax.cs.pca import fit_pca
from hecsb_jax.entropy.bottleneck import EntropyBottleneck


def _he_conv(c_in, c_out, kernel, *, stride=1, use_bias=True, rngs):
  return nnx.Conv(
      c_in, c_out, (kernel, kernel), strides=stride, padding="SAME",
      use_bias=use_bias,
      kernel_init=nnx.initializers.variance_scaling(2.0, "fan_in", "normal"),
      rngs=rngs,
  )


class ShallowAcquisition(nnx.Module):
  """From-scratch acquisition network: image -> split-resolution features.

  len(widths) stages of 3×3 stride-2 convolution, BatchNorm and ReLU, so the
  output stride is 2^len(widths) (three stages: 8, the stride of
  EfficientNet-Lite0's block4 and ResNet-50's layer2). Edge cost at 224×224
  with the default widths: 0.126 GMAC (10.8 M + 57.8 M + 57.8 M
  multiply-adds), a third of EfficientNet-Lite0's whole network (~0.4).
  """

  def __init__(
      self,
      widths: Sequence[int] = (32, 64, 128),
      *,
      in_channels: int = 3,
      rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      widths: output channels of each stride-2 stage; the last is C_a.
      in_channels: channels of the input image.
      rngs: initialization keys.
    """
    if not widths:
      raise ValueError("widths must name at least one stage")
    convs, norms = [], []
    c_in = in_channels
    for c_out in widths:
      convs.append(_he_conv(c_in, c_out, 3, stride=2, use_bias=False,
                            rngs=rngs))
      norms.append(nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs))
      c_in = c_out
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.out_channels = c_in
    self.stride = 2 ** len(widths)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, in_channels] float32 -> [B, H/s, W/s, C_a] float32."""
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return x


class TeacherPrefix(nnx.Module):
  """The teacher's own layers up to a split point, as the acquisition net.

  Wraps any backbone with ``features(x, until=name)``. Pass a copy of the
  teacher (`nnx.clone`), not the teacher itself: the student's prefix is
  then its own variables, frozen or trained by the trainer's filter, and a
  frozen teacher elsewhere in the same model is never touched through it.

  With ``running_stats=True`` (the default) the prefix's BatchNorm layers
  always use their stored (pretrained) statistics, even after
  ``model.train()``: batch statistics of the small batches a CPU affords
  would replace well-estimated ImageNet statistics with noise, and a frozen
  prefix must compute exactly the teacher's features.
  """

  def __init__(self, backbone: nnx.Module, until: str, *,
               running_stats: bool = True):
    """Args: backbone: the copy to run; until: its split point name."""
    self.backbone = backbone
    self.until = until
    self.running_stats = running_stats

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] normalized images -> the backbone's split features."""
    backbone = self.backbone
    if self.running_stats:
      backbone = nnx.view(backbone, only=nnx.BatchNorm,
                          use_running_average=True)
    return backbone.features(x, until=self.until)


class Measurement(nnx.Module):
  """y = W a at every position: a 1×1 convolution without bias.

  The kernel [1, 1, C_a, m] is the CS operator W^T; its Frobenius norm is
  bounded by ``bound`` (default sqrt(m C_a), the expected norm of an
  i.i.d. N(0, 1) matrix, as in `hecsb_jax.cs.measurement`).
  """

  def __init__(
      self,
      in_channels: int,
      num_measurements: int,
      *,
      bound: float | None = None,
      init_std: float = 1.0,
      rngs: nnx.Rngs,
  ):
    """Builds W.

    Args:
      in_channels: C_a.
      num_measurements: m.
      bound: the Frobenius bound; None for sqrt(m C_a).
      init_std: std of W's N(0, init_std²) entries at initialization; 1
        starts on the bound (a good random sensing matrix), smaller starts
        with fewer bits per symbol.
      rngs: initialization keys.
    """
    if num_measurements < 1 or in_channels < 1:
      raise ValueError(f"need m >= 1 and C_a >= 1, got {num_measurements},"
                       f" {in_channels}")
    self.bound = (frobenius_bound(num_measurements, in_channels)
                  if bound is None else float(bound))
    w = init_std * jax.random.normal(
        rngs.params(), (1, 1, in_channels, num_measurements))
    self.kernel = nnx.Param(project_to_frobenius_ball(w, self.bound))

  def __call__(self, a: jax.Array) -> jax.Array:
    """[B, h, w, C_a] float32 -> y [B, h, w, m] float32."""
    return jnp.einsum("bhwc,cm->bhwm", a, self.kernel[...][0, 0])

  def project_(self) -> None:
    """Projects W back onto the Frobenius ball (in place)."""
    self.kernel[...] = project_to_frobenius_ball(self.kernel[...], self.bound)


class FeatureDecoder(nnx.Module):
  """Server decoder: y_hat [B, h, w, m] -> teacher features [B, h, w, C_t].

  3×3 conv to ``width``, ReLU, ``blocks`` residual blocks, 1×1 conv to C_t
  (module docstring: why this shape).
  """

  def __init__(
      self,
      num_measurements: int,
      out_channels: int,
      *,
      width: int = 128,
      blocks: int = 1,
      input_scale: float = 1.0,
      linear_skip: bool = False,
      rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      num_measurements: m.
      out_channels: C_t.
      width: channels of the hidden layers.
      blocks: residual blocks.
      input_scale: fixed factor on y_hat before the first layer.
      linear_skip: add a 1×1 linear map of the scaled y_hat (no bias,
        starting at zero) to the output.
      rngs: initialization keys.
    """
    self.input_scale = float(input_scale)
    self.conv_in = _he_conv(num_measurements, width, 3, rngs=rngs)
    self.blocks = nnx.List([
        nnx.List([_he_conv(width, width, 3, rngs=rngs),
                  _he_conv(width, width, 3, rngs=rngs)])
        for _ in range(blocks)
    ])
    # A small output layer: the residual path starts near the identity and
    # the prediction starts near zero, the teacher features' typical mean.
    self.conv_out = nnx.Conv(
        width, out_channels, (1, 1),
        kernel_init=nnx.initializers.variance_scaling(0.1, "fan_in",
                                                      "normal"),
        rngs=rngs,
    )
    self.skip = (nnx.Conv(num_measurements, out_channels, (1, 1),
                          use_bias=False, kernel_init=nnx.initializers.zeros,
                          rngs=rngs)
                 if linear_skip else None)

  def __call__(self, y_hat: jax.Array) -> jax.Array:
    """[B, h, w, m] float32 -> [B, h, w, C_t] float32."""
    x = self.input_scale * y_hat
    h = jax.nn.relu(self.conv_in(x))
    for first, second in self.blocks:
      h = jax.nn.relu(h + second(jax.nn.relu(first(h))))
    out = self.conv_out(h)
    return out if self.skip is None else out + self.skip(x)


def principal_directions(features: jax.Array, m: int) -> jax.Array:
  """The top-m eigenvectors of the features' uncentred second moment.

  Args:
    features: [..., C] float32, any number of positions.
    m: how many, 1 <= m <= C.

  Returns:
    [C, m] float32 with orthonormal columns, largest eigenvalue first, each
    column's sign fixed (`hecsb_jax.cs.pca.fit_pca`, uncentred: W has no
    offset to remove the mean with).
  """
  c = features.shape[-1]
  if not 1 <= m <= c:
    raise ValueError(f"need 1 <= m <= C = {c}, got m = {m}")
  return fit_pca(np.asarray(features).reshape(-1, c), m,
                 center=False).components


class CodedBottleneck(nnx.Module):
  """What every entropy-coded split bottleneck shares (HECS-B, SVB).

  A subclass builds ``entropy`` (`EntropyBottleneck`), ``decoder`` and
  ``deterministic`` and defines ``measure(x, features=None) -> y``; this
  class adds the path around them that `SplitModel` and the distillation
  losses drive: noise or rounding under the prior, the server's decoder,
  the edge's integer symbols.
  """

  def encode(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
      features: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The edge's output: noisy (training) or rounded `measure(x)`.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      rng: key of the uniform noise; needed when training.
      training: noise (True) or rounding (False); None follows
        ``not self.deterministic``.
      features: see `measure`.

    Returns:
      (y_q, aux): y_q [B, h, w, m] float32 (y_tilde or y_hat; m the
      coded channels); aux from `EntropyBottleneck` (``y``,
      ``likelihoods`` [B, h, w, m], ``bits`` [B] float32).
    """
    if training is None:
      training = not self.deterministic
    y = self.measure(x, features)
    return self.entropy(y, training, rng)

  def decode(self, y_q: jax.Array) -> jax.Array:
    """[B, h, w, m] float32 -> [B, h, w, C_t] float32 teacher features."""
    return self.decoder(y_q)

  def __call__(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encode then decode.

    Returns:
      (features [B, h, w, C_t] float32, aux as `encode`).
    """
    y_q, aux = self.encode(x, rng, training=training)
    return self.decode(y_q), aux

  def edge_symbols(self, x: jax.Array) -> jax.Array:
    """The integers the edge codes: round(y), [B, h, w, m] int32."""
    return EntropyBottleneck.quantize(self.measure(x))

  def decode_symbols(self, symbols: jax.Array) -> jax.Array:
    """Decoded int32 symbols [B, h, w, m] -> features [B, h, w, C_t]."""
    return self.decode(EntropyBottleneck.dequantize(symbols))

  def project_(self) -> None:
    """No constraint to restore (HECS-B overrides it)."""


class HecsbBottleneck(CodedBottleneck):
  """Edge encoder + entropy model + server decoder (module docstring).

  Attributes:
    acquisition: image -> [B, h, w, C_a] (any module).
    measurement: `Measurement`, C_a -> m.
    entropy: `EntropyBottleneck` over the m channels.
    decoder: `FeatureDecoder`, m -> C_t.
    deterministic: rounding (True) or noise (False) by default; set by
      ``.eval()`` / ``.train()``.
  """

  def __init__(
      self,
      acquisition: nnx.Module,
      acquisition_channels: int,
      num_measurements: int,
      feature_channels: int,
      *,
      decoder_width: int = 128,
      decoder_blocks: int = 1,
      frobenius_bound: float | None = None,
      measurement_init_std: float = 1.0,
      decoder_skip: bool = False,
      prior_filters: Sequence[int] = (3, 3, 3),
      prior_init_scale: float = 10.0,
      rngs: nnx.Rngs,
  ):
    """Builds the bottleneck around a given acquisition network.

    Args:
      acquisition: `ShallowAcquisition`, `TeacherPrefix`, or any module
        mapping [B, H, W, 3] to [B, h, w, acquisition_channels] at the
        split resolution.
      acquisition_channels: C_a.
      num_measurements: m, channels of the coded map.
      feature_channels: C_t, channels of the teacher at the split.
      decoder_width, decoder_blocks: see `FeatureDecoder`.
      frobenius_bound: ‖W‖_F bound; None for sqrt(m C_a).
      measurement_init_std: see `Measurement`.
      decoder_skip: the decoder's linear path (`FeatureDecoder`'s
        ``linear_skip``).
      prior_filters, prior_init_scale: see `FactorizedPrior`.
      rngs: initialization keys.
    """
    self.acquisition = acquisition
    self.measurement = Measurement(
        acquisition_channels, num_measurements, bound=frobenius_bound,
        init_std=measurement_init_std, rngs=rngs,
    )
    self.entropy = EntropyBottleneck(
        num_measurements, filters=tuple(prior_filters),
        init_scale=prior_init_scale, rngs=rngs,
    )
    # A row of W starts with norm ~init_std sqrt(C_a), so y is that times
    # the scale of the features; the decoder undoes it, which keeps its
    # He-initialized layers at the features' scale from the first step.
    self.row_norm = measurement_init_std * math.sqrt(acquisition_channels)
    self.decoder = FeatureDecoder(
        num_measurements, feature_channels, width=decoder_width,
        blocks=decoder_blocks, linear_skip=decoder_skip,
        input_scale=1.0 / self.row_norm, rngs=rngs,
    )
    self.num_measurements = num_measurements
    self.deterministic = False

  def start_at_principal_directions_(self, directions: jax.Array) -> None:
    """W's rows along ``directions``, and the decoder's linear path their
    transpose (in place; before training).

    Each row keeps the norm a random start would have (``row_norm``), so
    the rate starts where the random start's does; the linear path then
    maps the scaled y_hat back to the features' projection on the
    directions: the decoder starts as the best rank-m linear code.

    Args:
      directions: [C_a, m] orthonormal columns (`principal_directions` of
        the acquisition's output).

    Raises:
      ValueError: shapes that do not fit, or no linear path while the
        acquisition's channels are the teacher's (the only case where the
        transpose is a decoder).
    """
    kernel = self.measurement.kernel[...]
    c_a, m = kernel.shape[2:]
    if directions.shape != (c_a, m):
      raise ValueError(f"directions must be [C_a, m] = [{c_a}, {m}], got"
                       f" {list(directions.shape)}")
    skip = self.decoder.skip
    if skip is None or skip.kernel[...].shape[-1] != c_a:
      raise ValueError("starting at the principal directions needs the"
                       " decoder's linear path (decoder_skip) and C_a equal"
                       " to the teacher's channels (the prefix acquisition)")
    self.measurement.kernel[...] = project_to_frobenius_ball(
        (self.row_norm * directions)[None, None], self.measurement.bound)
    skip.kernel[...] = directions.T[None, None].astype(skip.kernel.dtype)

  def measure(self, x: jax.Array, features: jax.Array | None = None
              ) -> jax.Array:
    """Acquisition then measurement, before quantization.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      features: [B, h, w, C_a] float32 precomputed acquisition output; when
        given, ``x`` is ignored (the caller already ran a frozen
        acquisition network, e.g. the teacher's prefix).

    Returns:
      y [B, h, w, m] float32.
    """
    a = self.acquisition(x) if features is None else features
    return self.measurement(a)

  def project_(self) -> None:
    """Restores the measurement's Frobenius bound (after each step)."""
    self.measurement.project_()
