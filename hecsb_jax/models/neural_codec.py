"""Learned image codec: Ballé et al.'s factorized-prior model.

    edge                                                      server
    x [B, H, W, 3] in [0, 1]
      ─► g_a: 4 × (5×5 conv, stride 2), GDN between   y [B, H/16, W/16, M]
      ─► EntropyBottleneck: y + U(-½, ½) (training)
                            round(y)       (test, coding)
      ─► int32 symbols ─► coding.compress ─► bytes ─► y_hat
                         ─► g_s: 4 × (5×5 transposed conv, stride 2),
                             IGDN between ─► x_hat [B, H, W, 3]

J. Ballé, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational image
compression with a scale hyperprior", ICLR 2018: the "factorized prior"
baseline of that paper (CompressAI's ``bmshj2018-factorized``), without the
hyperprior. N channels in the hidden layers, M in the latent; the paper (and
CompressAI, for its low-rate qualities) use N = 128, M = 192. The latent is
coded with the same factorized prior, bottleneck and native rANS coder as
HECS-B (`hecsb_jax.entropy`, `hecsb_jax.coding`), so the rates of the two
methods are counted the same way.

It is a baseline for split computing in the image domain: the edge sends a
learned code of the image, the server reconstructs it and runs the whole
classifier on x_hat. It is not a `SplitModel` bottleneck.

Loss (CompressAI's convention): λ · 255² · MSE(x, x_hat) + bpp, with x in
[0, 1], the MSE per element (pixel and colour channel), and bpp the bits of
an image divided by its H·W pixels. The 255² makes λ the weight of the MSE
on the 8-bit scale, so CompressAI's λ (0.0018 ... 0.0932 for its eight
qualities) carry over.

H and W must be multiples of 16: four stride-2 layers down and four up then
return the input's size exactly (224 = 14 · 16).

Mode: `nnx.Module.train()` / `.eval()` set `deterministic`, which chooses
noise (False) or rounding (True) when a call does not say `training=`.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from hecsb_jax.entropy.bottleneck import EntropyBottleneck
from hecsb_jax.models.gdn import GDN
from hecsb_jax.models.gdn import IGDN
from hecsb_jax.models.subpixel import SubpixelConvTranspose

DOWNSAMPLING = 16  # 2^4: four stride-2 layers


def _conv(c_in, c_out, rngs):
  return nnx.Conv(c_in, c_out, (5, 5), strides=2, padding="SAME", rngs=rngs)


def _deconv(c_in, c_out, rngs):
  # nnx.ConvTranspose's parameters and outputs, ~10x faster to train on a
  # CPU (subpixel's docstring says why).
  return SubpixelConvTranspose(c_in, c_out, (5, 5), strides=2, rngs=rngs)


class AnalysisTransform(nnx.Module):
  """g_a: x [B, H, W, 3] -> y [B, H/16, W/16, M] (conv, GDN, ..., conv)."""

  def __init__(self, n: int, m: int, *, in_channels: int = 3,
               rngs: nnx.Rngs):
    """Args: n: hidden channels N; m: latent channels M; in_channels: 3;
    rngs: initialization keys."""
    widths = (in_channels, n, n, n, m)
    self.convs = nnx.List([_conv(a, b, rngs)
                           for a, b in zip(widths[:-1], widths[1:])])
    self.gdns = nnx.List([GDN(n) for _ in range(3)])

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, gdn in zip(self.convs[:-1], self.gdns):
      x = gdn(conv(x))
    return self.convs[-1](x)


class SynthesisTransform(nnx.Module):
  """g_s: y_hat [B, h, w, M] -> x_hat [B, 16h, 16w, 3] (deconv, IGDN, ...)."""

  def __init__(self, n: int, m: int, *, out_channels: int = 3,
               rngs: nnx.Rngs):
    """Args: n: hidden channels N; m: latent channels M; out_channels: 3;
    rngs: initialization keys."""
    widths = (m, n, n, n, out_channels)
    self.deconvs = nnx.List([_deconv(a, b, rngs)
                             for a, b in zip(widths[:-1], widths[1:])])
    self.igdns = nnx.List([IGDN(n) for _ in range(3)])

  def __call__(self, y_hat: jax.Array) -> jax.Array:
    h = y_hat
    for deconv, igdn in zip(self.deconvs[:-1], self.igdns):
      h = igdn(deconv(h))
    return self.deconvs[-1](h)


class FactorizedPriorCodec(nnx.Module):
  """g_a + entropy bottleneck + g_s (module docstring).

  Attributes:
    g_a: `AnalysisTransform`.
    entropy: `EntropyBottleneck` over the M latent channels (build its
      tables with `hecsb_jax.entropy.build_tables(codec.entropy)`).
    g_s: `SynthesisTransform`.
    deterministic: rounding (True) or noise (False) by default; set by
      ``.eval()`` / ``.train()``.
  """

  def __init__(
      self,
      n: int = 128,
      m: int = 192,
      *,
      prior_filters: Sequence[int] = (3, 3, 3),
      prior_init_scale: float = 10.0,
      rngs: nnx.Rngs,
  ):
    """Builds the transforms and the prior.

    Args:
      n: N, channels of the hidden layers.
      m: M, channels of the coded latent.
      prior_filters, prior_init_scale: see `FactorizedPrior`.
      rngs: initialization keys.
    """
    self.g_a = AnalysisTransform(n, m, rngs=rngs)
    self.entropy = EntropyBottleneck(
        m, filters=tuple(prior_filters), init_scale=prior_init_scale,
        rngs=rngs,
    )
    self.g_s = SynthesisTransform(n, m, rngs=rngs)
    self.num_latent_channels = m
    self.deterministic = False

  def analysis(self, x: jax.Array) -> jax.Array:
    """g_a: [B, H, W, 3] float32 in [0, 1] -> y [B, H/16, W/16, M]."""
    _check_size(x)
    return self.g_a(x)

  def encode(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The edge's output: noisy (training) or rounded latents.

    Args:
      x: [B, H, W, 3] float32 images in [0, 1], H and W multiples of 16.
      rng: key of the uniform noise; needed when training.
      training: noise (True) or rounding (False); None follows
        ``not self.deterministic``.

    Returns:
      (y_q, aux): y_q [B, H/16, W/16, M] float32; aux from
      `EntropyBottleneck` (``y``, ``likelihoods``, ``bits`` [B]).
    """
    if training is None:
      training = not self.deterministic
    return self.entropy(self.analysis(x), training, rng)

  def decode(self, y_q: jax.Array) -> jax.Array:
    """g_s: [B, h, w, M] float32 -> x_hat [B, 16h, 16w, 3] (not clipped)."""
    return self.g_s(y_q)

  def __call__(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encode then decode (the training path).

    Returns:
      (x_hat [B, H, W, 3] float32, not clipped so that the distortion's
      gradient reaches every output; aux as `encode`, plus ``bpp`` [B]
      float32, the bits per pixel of each image).
    """
    y_q, aux = self.encode(x, rng, training=training)
    aux["bpp"] = aux["bits"] / (x.shape[1] * x.shape[2])
    return self.decode(y_q), aux

  def edge_symbols(self, x: jax.Array) -> jax.Array:
    """The integers the edge codes: round(g_a(x)), [B, h, w, M] int32."""
    return EntropyBottleneck.quantize(self.analysis(x))

  def decode_symbols(self, symbols: jax.Array) -> jax.Array:
    """Decoded int32 symbols [B, h, w, M] -> the reconstructed image
    [B, 16h, 16w, 3] float32, clipped to [0, 1] (what a classifier sees)."""
    x_hat = self.decode(EntropyBottleneck.dequantize(symbols))
    return jnp.clip(x_hat, 0.0, 1.0)

  def project_(self) -> None:
    """No constraint to restore (the `SplitModel` bottleneck interface)."""


def rate_distortion_loss(
    x: jax.Array, x_hat: jax.Array, bits: jax.Array, lmbda: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """λ · 255² · MSE + bpp (module docstring: the convention).

  Args:
    x: [B, H, W, 3] float32 originals in [0, 1].
    x_hat: [B, H, W, 3] float32 reconstructions.
    bits: [B] float32, -Σ log2 p of each image's latents.
    lmbda: λ, the weight of the distortion.

  Returns:
    (loss, {"mse", "bpp"}) scalars: the batch means.
  """
  mse = jnp.mean(jnp.square(x_hat - x))
  bpp = jnp.mean(bits) / (x.shape[1] * x.shape[2])
  return lmbda * 255.0**2 * mse + bpp, {"mse": mse, "bpp": bpp}


def random_patches(x: jax.Array, size: int, key: jax.Array) -> jax.Array:
  """A size×size window of each image, at its own random place.

  How image codecs are trained (Ballé et al. train on 256×256 patches):
  the transforms are convolutional, so a codec trained on patches codes
  whole images, at a fraction of the training FLOPs.

  Args:
    x: [B, H, W, C] images, H, W >= size.
    size: the window's side.
    key: chooses the places.

  Returns:
    [B, size, size, C]; ``x`` itself when size equals both sides.
  """
  b, h, w, c = x.shape
  if not 0 < size <= min(h, w):
    raise ValueError(f"patch side must be in 1..{min(h, w)}, got {size}")
  if size == h == w:
    return x
  rows = jax.random.randint(key, (b,), 0, h - size + 1)
  cols = jax.random.randint(jax.random.fold_in(key, 1), (b,), 0,
                            w - size + 1)
  return jax.vmap(lambda image, r, q: jax.lax.dynamic_slice(
      image, (r, q, 0), (size, size, c)))(x, rows, cols)


def _check_size(x: jax.Array) -> None:
  if x.ndim != 4 or x.shape[1] % DOWNSAMPLING or x.shape[2] % DOWNSAMPLING:
    raise ValueError(
        f"expected images [B, H, W, C] with H and W multiples of"
        f" {DOWNSAMPLING}, got {tuple(x.shape)}"
    )
