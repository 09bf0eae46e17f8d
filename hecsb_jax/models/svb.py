"""SVB: the shallow variational bottleneck of a split network.

    edge                                                       server
    x [B, H, W, 3] ─► ResidualDownBlock 3 → 48     (stride 2)
                   ─► ResidualDownBlock 48 → 64    (stride 4)
                   ─► ResidualDownBlock 64 → L     (stride 8)
                                                   y [B, H/8, W/8, L]
                   ─► EntropyBottleneck: y + U(-½, ½) (training)
                                         round(y)       (test, coding)
                   ─► int32 symbols ─► coding.compress ─► bytes ─►
                                         y_hat [B, h, w, L] ─► decoder ─►
                                         features [B, h, w, C_t] (the
                                         teacher's feature map at the split)

The learned baseline of supervised compression for split computing:
Matsubara, Yang, Levorato, Mandt, "Supervised compression for
resource-constrained edge computing systems" (WACV 2022; the Entropic
Student) and Furutanpey, Raith, Dustdar, "FrankenSplit: efficient neural
feature compression with shallow variational bottleneck injection for
mobile edge computing" (IEEE TMC 2024). A small encoder of its own, trained
from scratch, replaces the teacher's layers before the split; its output is
the latent, coded under the factorized prior of Ballé et al. (2018) with
the same `EntropyBottleneck` and native rANS coder as HECS-B, so the two
methods' rates are counted the same way. Trained with the same two-stage
distillation (`distill_losses`): head distillation with a rate term, then
knowledge distillation of the server side.

Output stride 8: 28×28 at 224×224, the split resolution of
EfficientNet-Lite0's block4 (40 channels) and ResNet-50's layer2 (512).

Residual block (our choice, in the style of CompressAI's
``ResidualBlockWithStride``):

    x ─► 3×3 conv, stride 2 ─► GDN ─► 3×3 conv ─► + ─► out
    └──► 1×1 conv, stride 2 ─────────────────────┘

GDN (Ballé et al. 2016; `gdn.py`) is the nonlinearity of the learned image
codecs whose analysis transforms this encoder follows; it Gaussianizes the
responses, which suits a factorized prior, and needs no batch statistics
(which would differ between the stages and between training and the edge).
The block ends linearly, so the latent is not confined to one sign or a
bounded range before quantization. Edge cost at 224×224 with the default
widths: 0.574 GMAC (0.307 + 0.225 + 0.042 per block; the 48 → 48 3×3 conv
at 112×112 alone is 0.260), more than EfficientNet-Lite0's whole network
(~0.4); smaller ``widths`` cut it.

Decoder (server side): `hecsb_bottleneck.FeatureDecoder`, the decoder of
HECS-B (3×3 conv, residual blocks, 1×1 conv to C_t), so the two methods
differ only on the edge.

Mode: `nnx.Module.train()` / `.eval()` set `deterministic`, which chooses
noise (False) or rounding (True) when a call does not say `training=`.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax

from hecsb_jax.entropy.bottleneck import EntropyBottleneck
from hecsb_jax.models.gdn import GDN
from hecsb_jax.models.hecsb_bottleneck import CodedBottleneck
from hecsb_jax.models.hecsb_bottleneck import FeatureDecoder


class ResidualDownBlock(nnx.Module):
  """3×3 conv stride 2 ─► GDN ─► 3×3 conv, plus a 1×1 stride-2 shortcut."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
    """Args: c_in, c_out: channels; rngs: initialization keys."""
    self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=2, padding="SAME",
                          rngs=rngs)
    self.gdn = GDN(c_out)
    self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding="SAME", rngs=rngs)
    self.shortcut = nnx.Conv(c_in, c_out, (1, 1), strides=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, c_in] -> [B, ceil(H/2), ceil(W/2), c_out] float32."""
    return self.conv2(self.gdn(self.conv1(x))) + self.shortcut(x)


class SvbEncoder(nnx.Module):
  """The edge encoder: image -> latent y at stride 2^(len(widths) + 1)."""

  def __init__(
      self,
      latent_channels: int = 48,
      *,
      widths: Sequence[int] = (48, 64),
      in_channels: int = 3,
      rngs: nnx.Rngs,
  ):
    """Builds len(widths) + 1 `ResidualDownBlock`s.

    Args:
      latent_channels: L, channels of the last block (the coded latent).
      widths: output channels of the blocks before the last.
      in_channels: channels of the input image.
      rngs: initialization keys.
    """
    if latent_channels < 1:
      raise ValueError(f"latent_channels must be positive, got"
                       f" {latent_channels}")
    chans = (in_channels, *widths, latent_channels)
    self.blocks = nnx.List([ResidualDownBlock(a, b, rngs=rngs)
                            for a, b in zip(chans[:-1], chans[1:])])
    self.stride = 2 ** len(self.blocks)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, 3] float32 -> y [B, H/s, W/s, L] float32."""
    for block in self.blocks:
      x = block(x)
    return x


class SvbBottleneck(CodedBottleneck):
  """Edge encoder + entropy model + server decoder (module docstring).

  `CodedBottleneck` (shared with `HecsbBottleneck`) gives it the path
  `SplitModel` and the distillation losses drive.

  Attributes:
    encoder: `SvbEncoder`, image -> [B, h, w, L].
    entropy: `EntropyBottleneck` over the L channels.
    decoder: `FeatureDecoder`, L -> C_t.
    deterministic: rounding (True) or noise (False) by default; set by
      ``.eval()`` / ``.train()``.
  """

  def __init__(
      self,
      feature_channels: int,
      latent_channels: int = 48,
      *,
      widths: Sequence[int] = (48, 64),
      decoder_width: int = 128,
      decoder_blocks: int = 1,
      prior_filters: Sequence[int] = (3, 3, 3),
      prior_init_scale: float = 10.0,
      rngs: nnx.Rngs,
  ):
    """Builds the three parts.

    Args:
      feature_channels: C_t, channels of the teacher at the split.
      latent_channels: L, channels of the coded latent.
      widths: see `SvbEncoder`; the default gives stride 8.
      decoder_width, decoder_blocks: see `FeatureDecoder`.
      prior_filters, prior_init_scale: see `FactorizedPrior`.
      rngs: initialization keys.
    """
    self.encoder = SvbEncoder(latent_channels, widths=widths, rngs=rngs)
    self.entropy = EntropyBottleneck(
        latent_channels, filters=tuple(prior_filters),
        init_scale=prior_init_scale, rngs=rngs,
    )
    self.decoder = FeatureDecoder(
        latent_channels, feature_channels, width=decoder_width,
        blocks=decoder_blocks, rngs=rngs,
    )
    self.latent_channels = latent_channels
    self.deterministic = False

  def measure(self, x: jax.Array, features: jax.Array | None = None
              ) -> jax.Array:
    """The encoder's latent before quantization.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      features: must be None: SVB encodes the image itself (there is no
        acquisition network whose output a caller could supply).

    Returns:
      y [B, H/8, W/8, L] float32.
    """
    if features is not None:
      raise ValueError(
          "SvbBottleneck encodes the image itself and takes no precomputed"
          " features (use reuse_teacher_features=False with it)"
      )
    return self.encoder(x)
