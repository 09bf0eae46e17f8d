"""Builds the learned models of split_rd, and rebuilds a trained one from
its folder alone (no config file, no teacher weights, no training data).

    model = saved_model.load("runs/split_rd_v2/ckpt/hecsb_beta0.0003")
    symbols = model.module.edge_symbols(normalized_images)   # the edge
    logits = model.module.logits_from_symbols(symbols)       # the server

A model folder (what `experiments.split_rd` writes, one per method and
setting) holds ``model/`` (an orbax checkpoint of the saved module's whole
state, with a JSON record whose ``fingerprint`` names the method's section,
the backbone and the split) and, for entropy-coded methods, ``tables.npz``.
The module is the student `SplitModel` of a split method (hecsb, svb,
crbq; its copy of the backbone included) or the image codec. Export, the
server and the experiments all build models here, so a checkpoint means one
thing everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax import coding
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.models import crbq as crbq_lib
from hecsb_jax.models import efficientnet_lite
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models import neural_codec as codec_lib
from hecsb_jax.models import resnet
from hecsb_jax.models import svb as svb_lib
from hecsb_jax.models.split import SplitModel
from hecsb_jax.train.checkpoint import TrainCheckpointer

# Method name -> (its fingerprint section, the key of its setting). The
# folder of a model is ``<method>_<label><value>``.
METHODS = {
    "hecsb": "beta",
    "svb": "beta",
    "crbq": "k",
    "neural_codec": "lambda",
}
SPLIT_METHODS = ("hecsb", "svb", "crbq")
ENTROPY_CODED = ("hecsb", "svb", "neural_codec")

# The image codec's input: RGB in [0, 1]. Split methods take their
# backbone's normalization (`pipeline.NORMALIZATIONS`).
UNIT = pipeline.Normalization((0.0,) * 3, (255.0,) * 3)


class SavedModelError(ValueError):
  """A model folder that cannot be rebuilt; the message names the path."""


def backbone_skeleton(name: str, num_classes: int = 1000) -> nnx.Module:
  """The backbone's architecture with abstract (shape-only) variables."""
  if name == "efficientnet_lite0":
    return nnx.eval_shape(
        lambda: efficientnet_lite.EfficientNetLite0(rngs=nnx.Rngs(0)))
  if name == "resnet50":
    return nnx.eval_shape(
        lambda: resnet.resnet50(num_classes, rngs=nnx.Rngs(0)))
  raise SavedModelError(f"unknown backbone {name!r}: expected one of"
                        f" {sorted(pipeline.NORMALIZATIONS)}")


def feature_channels(backbone: nnx.Module, split: str,
                     image_size: int = 224) -> int:
  """Channels of the backbone's features at ``split``."""
  prefix = hb.TeacherPrefix(backbone, split)
  out = nnx.eval_shape(
      lambda m: m(jnp.zeros((1, image_size, image_size, 3))), prefix)
  return int(out.shape[-1])


def build(method: str, teacher: nnx.Module, *, split: str,
          section: Mapping[str, Any], value: float, seed: int,
          channels: int | None = None) -> nnx.Module:
  """A fresh, untrained model of ``method`` at setting ``value``.

  Args:
    method: a key of `METHODS`.
    teacher: the backbone (copied, never modified).
    split: the split point (split methods).
    section: the method's config section (``config[method]``).
    value: β (hecsb, svb), the channels k (crbq) or λ (neural_codec).
    seed: initialization seed.
    channels: the teacher's feature channels at ``split`` (computed when
      None).

  Returns:
    the student `SplitModel` (split methods) or the codec.
  """
  rngs = nnx.Rngs(seed)
  s = section
  if method == "neural_codec":
    return codec_lib.FactorizedPriorCodec(
        s["n"], s["m"], prior_init_scale=s["prior_init_scale"], rngs=rngs)
  if method not in SPLIT_METHODS:
    raise SavedModelError(f"unknown method {method!r}: expected one of"
                          f" {sorted(METHODS)}")
  if channels is None:
    channels = feature_channels(teacher, split)
  if method == "hecsb":
    if s["acquisition"] == "shallow" and not s["train_acquisition"]:
      raise ValueError("a from-scratch shallow acquisition must be trained:"
                       " set hecsb.train_acquisition (split_rd --acquisition"
                       " shallow does)")
    if s["acquisition"] == "prefix":
      acquisition = hb.TeacherPrefix(nnx.clone(teacher), split)
      acquired = channels
    else:
      acquisition = hb.ShallowAcquisition(tuple(s["shallow_widths"]),
                                          rngs=rngs)
      acquired = s["shallow_widths"][-1]
    bottleneck = hb.HecsbBottleneck(
        acquisition, acquired, s["num_measurements"], channels,
        decoder_width=s["decoder_width"], decoder_blocks=s["decoder_blocks"],
        measurement_init_std=s["measurement_init_std"],
        # Absent from the sections of models trained before it existed.
        decoder_skip=bool(s.get("decoder_skip", False)),
        prior_init_scale=s["prior_init_scale"], rngs=rngs)
  elif method == "svb":
    bottleneck = svb_lib.SvbBottleneck(
        channels, s["latent_channels"], widths=tuple(s["widths"]),
        decoder_width=s["decoder_width"], decoder_blocks=s["decoder_blocks"],
        prior_init_scale=s["prior_init_scale"], rngs=rngs)
  else:  # crbq
    bottleneck = crbq_lib.CrbqBottleneck(
        hb.TeacherPrefix(nnx.clone(teacher), split), channels, int(value),
        channels, reduction_layers=s["reduction_layers"],
        decoder_width=s["decoder_width"], decoder_blocks=s["decoder_blocks"],
        rngs=rngs)
  return SplitModel(nnx.clone(teacher), split, bottleneck)


@dataclasses.dataclass
class SavedModel:
  """A trained model rebuilt from its folder.

  Attributes:
    path: the model folder.
    method: "hecsb", "svb", "crbq" or "neural_codec".
    value: its setting (β, k or λ).
    module: the student `SplitModel` or the codec, in inference mode, with
      ``edge_symbols(x)`` and ``logits_from_symbols`` (split methods) or
      ``edge_symbols`` / ``decode_symbols`` (the codec: an image in [0, 1]).
    tables: its coding tables (None for crbq, which is not entropy coded).
    fingerprint: the training record (settings, data and teacher hashes).
    summary: what training reported.
    backbone: the backbone's name (the teacher the codec feeds, too).
    split: the split point (split methods).
    image_size: the side of the square input.
    norm: the input normalization (mean, std per RGB channel on 0..255;
      images are centre crops of the shorter side resized to 256/224 of
      the crop with ``interpolation``: `pipeline.resize_center_crop`).
    interpolation: the evaluation resize filter ("bicubic", or "bilinear"
      for torchvision's ResNet-50: the configs' ``data.interpolation``).
  """

  path: Path
  method: str
  value: float
  module: nnx.Module
  tables: coding.CodingTables | None
  fingerprint: dict
  summary: dict
  backbone: str
  split: str
  image_size: int
  norm: pipeline.Normalization
  interpolation: str

  @property
  def name(self) -> str:
    return self.path.name

  def normalize(self, images) -> jax.Array:
    """uint8 RGB [..., 3] -> the module's float32 input."""
    return jnp.asarray(pipeline.normalize(np.asarray(images), self.norm))


def read_record(model_dir: str | os.PathLike) -> dict:
  """The JSON record (``fingerprint``, ``summary``) of a finished model."""
  ckpt = Path(model_dir) / "model"
  if not ckpt.is_dir():
    raise FileNotFoundError(
        f"{ckpt}: expected the finished model's checkpoint (a folder"
        " written by experiments.split_rd); train the model first")
  checkpointer = TrainCheckpointer(ckpt)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"{ckpt}: holds no saved step")
    return checkpointer.restore_meta(step)
  finally:
    checkpointer.close()


def method_of(model_dir: Path, fingerprint: dict) -> tuple[str, float]:
  """(method, value) of a folder: its fingerprint holds the method's
  section (``"hecsb": {...}``) and the value under the method's label."""
  found = [m for m in METHODS if isinstance(fingerprint.get(m), dict)]
  if len(found) != 1 or METHODS[found[0]] not in fingerprint:
    raise SavedModelError(
        f"{model_dir}: its record names no single method (expected one of"
        f" {sorted(METHODS)} with its setting)")
  return found[0], float(fingerprint[METHODS[found[0]]])


def load(model_dir: str | os.PathLike) -> SavedModel:
  """Rebuilds the trained model of ``model_dir`` (module docstring).

  Raises:
    FileNotFoundError: no finished model there (or no tables.npz where
      the method needs one); the message names the path.
    SavedModelError: a record this code cannot rebuild.
  """
  model_dir = Path(model_dir)
  record = read_record(model_dir)
  fingerprint = record.get("fingerprint") or {}
  method, value = method_of(model_dir, fingerprint)
  backbone = fingerprint.get("backbone")
  if backbone not in pipeline.NORMALIZATIONS:
    raise SavedModelError(f"{model_dir}: unknown backbone {backbone!r}")
  split = fingerprint.get("split", "")
  tables = None
  if method in ENTROPY_CODED:
    tables_path = model_dir / "tables.npz"
    tables = coding.load_tables(tables_path)  # names the path if missing

  teacher = backbone_skeleton(backbone)
  module = nnx.eval_shape(lambda: build(
      method, teacher, split=split, section=fingerprint[method],
      value=value, seed=0))
  checkpointer = TrainCheckpointer(model_dir / "model")
  try:
    state, _ = checkpointer.restore(checkpointer.latest_step(),
                                    nnx.state(module))
  except (KeyError, ValueError, OSError) as e:
    # orbax names neither the folder nor what is wrong in plain words.
    raise SavedModelError(
        f"{model_dir / 'model'}: the checkpoint does not hold this model's"
        f" arrays (corrupt, or written by other code): {e!r}"[:2000]) from e
  finally:
    checkpointer.close()
  nnx.update(module, state)
  module.eval()
  norm = UNIT if method == "neural_codec" else pipeline.normalization(backbone)
  return SavedModel(
      path=model_dir, method=method, value=value, module=module,
      tables=tables, fingerprint=fingerprint,
      summary=record.get("summary") or {}, backbone=backbone, split=split,
      image_size=int(fingerprint.get("image_size", 224)), norm=norm,
      interpolation="bilinear" if backbone == "resnet50" else "bicubic")
