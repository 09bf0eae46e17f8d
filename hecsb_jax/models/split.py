"""A classifier cut in two at a named split point, with or without a
bottleneck in between.

    without a bottleneck (the plain cut):
      x ─► head: backbone.features(x, until=split) ─► h ─► tail:
           backbone.tail(h, after=split) ─► logits        == backbone(x)

    with a bottleneck (HECS-B, `hecsb_bottleneck.HecsbBottleneck`; or a
    baseline with the same methods: `svb.SvbBottleneck`,
    `crbq.CrbqBottleneck`):
      edge                                   server
      x ─► head: acquisition ─► measurement ─► y_tilde / y_hat ─► tail:
           decoder ─► features ─► backbone.tail(·, after=split) ─► logits

Nothing here depends on the backbone beyond ``features(x, until=name)`` and
``tail(h, after=name)`` (EfficientNet-Lite0, ResNet-50, or a test's toy
network). The backbone held here is the student's: in distillation it is a
copy of the teacher whose layers after the split may be fine-tuned; its
layers before the split are unused once a bottleneck replaces them.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax


class SplitModel(nnx.Module):
  """head (edge) ─► optional bottleneck ─► tail (server).

  Attributes:
    backbone: module with ``features`` and ``tail``.
    split: the split point's name.
    bottleneck: a bottleneck module (`HecsbBottleneck`, `SvbBottleneck`,
      `CrbqBottleneck`: ``encode``, ``decode``, ``edge_symbols``,
      ``decode_symbols``, ``project_``) or None.
    tail_running_stats: the tail's BatchNorm layers always use stored
      statistics (see `__init__`).
  """

  def __init__(
      self,
      backbone: nnx.Module,
      split: str,
      bottleneck: nnx.Module | None = None,
      *,
      tail_running_stats: bool = True,
  ):
    """Cuts ``backbone`` at ``split``.

    Args:
      backbone: the network to cut (owned by this model).
      split: a split point name the backbone accepts.
      bottleneck: what replaces the layers before the split, or None for
        the plain cut.
      tail_running_stats: if True, fine-tuning the tail keeps its pretrained
        BatchNorm statistics (batches of a few dozen images estimate them
        worse than ImageNet did) and only the affine parameters and
        convolutions train; False uses and updates batch statistics in
        training mode.
    """
    self.backbone = backbone
    self.split = split
    self.bottleneck = bottleneck
    self.tail_running_stats = tail_running_stats

  def head(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
      features: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The edge's part: image -> what crosses the link.

    Args:
      x: [B, H, W, 3] float32 normalized images.
      rng: noise key (bottleneck in training only).
      training: noise or rounding; None follows the module's mode.
      features: precomputed acquisition output (see
        `HecsbBottleneck.measure`); bottleneck only.

    Returns:
      (h, aux): without a bottleneck, the backbone's split features and {};
      with one, y_tilde / y_hat [B, h, w, m] and the bottleneck's aux
      (``likelihoods``, ``bits`` [B]).
    """
    if self.bottleneck is None:
      return self.backbone.features(x, until=self.split), {}
    return self.bottleneck.encode(x, rng, training=training,
                                  features=features)

  def decode(self, h: jax.Array) -> jax.Array:
    """The server's decoder: head output -> split features (identity
    without a bottleneck)."""
    if self.bottleneck is None:
      return h
    return self.bottleneck.decode(h)

  def tail_from_features(self, features: jax.Array) -> jax.Array:
    """The backbone's layers after the split: features -> logits [B, K]."""
    backbone = self.backbone
    if self.tail_running_stats:
      backbone = nnx.view(backbone, only=nnx.BatchNorm,
                          use_running_average=True)
    return backbone.tail(features, after=self.split)

  def tail(self, h: jax.Array) -> jax.Array:
    """The server's part: head output -> logits [B, K] float32."""
    return self.tail_from_features(self.decode(h))

  def __call__(
      self,
      x: jax.Array,
      rng: jax.Array | None = None,
      *,
      training: bool | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """head then tail.

    Returns:
      (logits [B, K] float32, aux of `head`).
    """
    h, aux = self.head(x, rng, training=training)
    return self.tail(h), aux

  def edge_symbols(self, x: jax.Array) -> Any:
    """What the edge sends: int32 [B, h, w, m] symbols to code (CR+BQ: its
    8-bit `QuantizedTensor`); needs a bottleneck."""
    self._need_bottleneck("edge_symbols")
    return self.bottleneck.edge_symbols(x)

  def logits_from_symbols(self, symbols: Any) -> jax.Array:
    """The server from what `edge_symbols` sent to logits [B, K]."""
    self._need_bottleneck("logits_from_symbols")
    return self.tail_from_features(self.bottleneck.decode_symbols(symbols))

  def project_(self) -> None:
    """Restores the measurement's norm bound (no-op without a bottleneck)."""
    if self.bottleneck is not None:
      self.bottleneck.project_()

  def _need_bottleneck(self, what: str) -> None:
    if self.bottleneck is None:
      raise ValueError(f"{what} needs a bottleneck; this SplitModel is the"
                       f" plain cut at {self.split!r}")
