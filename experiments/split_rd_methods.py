"""The learned methods of the split rate-accuracy experiment.

Each method says what it builds, how it trains (the stages `fit` runs),
what its edge sends and how the server turns that into logits:

    method        edge (trained)                  sent            server
    hecsb         teacher prefix + 1×1 W, round   rANS container  decoder + tail
    svb           3 strided residual blocks       rANS container  decoder + tail
    crbq          teacher prefix + reduction      8-bit tensor    decoder + tail
    neural_codec  Ballé 2018 analysis transform   rANS container  synthesis, then
                                                                  the teacher

The three split methods (hecsb, svb, crbq) are a `SplitModel` beside the
frozen teacher, trained by the same two stages (head distillation, then
knowledge distillation; `distill_losses`) on the same batches; the image
codec trains for rate + MSE on the same batches for as many epochs as
the two stages together, with the same optimizer and schedule, and the
unmodified teacher classifies what it decodes.

A model is one (method, value) pair: the value is β for the rate-weighted
methods, the bottleneck's channels k for CR+BQ, λ for the codec. Its
folder is ``OUT/ckpt/<method>_<label><value>`` (`Method.model_name`).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax import coding
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.models import crbq as crbq_lib
from hecsb_jax.train import saved_model
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models import neural_codec as codec_lib
from hecsb_jax.train.trainer import FitConfig

# The image codec's input: RGB in [0, 1].
UNIT = saved_model.UNIT

# Section keys added after models were trained, with the value that
# reproduces those models: at that value a key is left out of the
# fingerprint, so the earlier checkpoints stay valid.
LATER_KEYS = {"measurement_init": "random", "principal_images": 512,
              "decoder_skip": False}
# Section keys that the fingerprint records elsewhere: a method's own
# stage-2 choice is its "stage2" part's "train".
_ELSEWHERE = ("stage2_train",)
_NONE = object()


@dataclasses.dataclass(frozen=True)
class Stage:
  """One `fit` call of a model's training."""

  name: str  # its checkpoint folder under the model's folder
  fit_config: FitConfig
  loss_fn: Callable
  trainable: Any  # nnx filter
  shown: tuple[str, ...]  # metrics on the progress bar
  prior_lr_multiplier: float = 1.0


def _fit_config(section, seed: int, epochs: int | None = None
                ) -> FitConfig:
  return FitConfig(
      epochs=section.epochs if epochs is None else epochs,
      batch_size=section.batch_size, learning_rate=section.learning_rate,
      schedule=section.schedule, warmup_epochs=section.warmup_epochs,
      seed=seed)


def stage2_filter(train: str, train_acquisition: bool):
  """What stage 2 trains: "decoder", "decoder_tail" or "student"."""
  if train == "decoder":
    return nnx.All(nnx.Param, nnx.PathContains("student"),
                   nnx.PathContains("decoder"))
  if train == "decoder_tail":
    return dl.stage2_trainable(train_encoder=False)
  if train == "student":
    return dl.stage2_trainable(train_encoder=True,
                               train_acquisition=train_acquisition)
  choices = ", ".join(split_rd_config.STAGE2_TRAINS)
  raise ValueError(f"stage 2 trains one of {choices}, got {train!r}")


class Method:
  """What one learned method builds, trains and sends (module docstring).

  Subclasses set the class attributes and `build`; split methods share
  the two distillation stages and the SplitModel's send/receive path.
  """

  name: str  # results key, --methods name
  section: str  # its config section
  values_key: str  # the section's list of values (one model each)
  label: str  # "beta": settings read "beta=1e-05", folders "..._beta1e-05"
  entropy_coded: bool = True  # sends a rANS container under tables.npz
  split: bool = True  # a SplitModel beside the teacher (else a codec)

  # ------------------------------------------------------------ naming

  def values(self, config) -> tuple[float, ...]:
    return tuple(config[self.section][self.values_key])

  def model_name(self, value: float) -> str:
    return f"{self.name}_{self.label}{value:g}"

  def setting(self, value: float) -> str:
    return f"{self.label}={value:g}"

  def seed(self, config, value: float) -> int:
    """From the value itself (not its place in the list), so a model
    resumes the same whichever list names it."""
    return (config.seed
            + zlib.crc32(f"{self.name}{value:g}".encode())) % 2**31

  def fingerprint(self, config, value: float, data_id: str,
                  teacher_id: str, format_: int) -> dict:
    return {
        "format": format_, self.label: value, "backbone": config.backbone,
        "split": config.split, "teacher_sha256": teacher_id,
        "train_data": data_id, "seed": config.seed,
        self.section: {
            k: v for k, v in config[self.section].to_dict().items()
            if k != self.values_key and k not in _ELSEWHERE
            and LATER_KEYS.get(k, _NONE) != v},
        "stage1": config.stage1.to_dict(),
        "stage2": dict(config.stage2.to_dict(),
                       train=self.stage2_train(config)),
        "image_size": config.data.image_size,
        "crop_scale": list(config.data.crop_scale),
    }

  def stage2_train(self, config) -> str:
    """What this method's stage 2 trains (`stage2_filter`)."""
    return config.stage2.train

  def stage_fingerprints(self, config, value: float, fingerprint: dict
                         ) -> list[tuple[str, dict]]:
    """Each stage's checkpoint fingerprint, in training order.

    A stage depends on the settings of itself and the stages before it,
    not on those after: stage 1's leaves out the ``stage2`` section, so a
    finished stage 1 is reused when only stage 2's settings change (copy
    a model's ``stage1/`` into a new --out).
    """
    names = [stage.name for stage in self.stages(config, value)]
    return [(name, {k: v for k, v in dict(fingerprint, stage=name).items()
                    if k not in names[i + 1:]})
            for i, name in enumerate(names)]

  def shape_keys(self) -> tuple[str, ...]:
    """Fingerprint keys that shape the model (what --eval-only checks)."""
    return ("format", "backbone", "split", self.section)

  # ---------------------------------------------------------- training

  def build(self, teacher, config, value: float) -> nnx.Module:
    """A fresh model: what `fit` trains (a `TeacherStudent` or a codec)."""
    raise NotImplementedError

  def start(self, model: nnx.Module, config, images: Callable[[int], Any]
            ) -> str | None:
    """Data-dependent initialization of a fresh ``model`` (in place),
    before its first stage; a line for the log, or None for none.

    ``images(n)`` returns n normalized training images [n, H, W, 3] (the
    first augmented batches, the same on every process). A resumed
    training restores its checkpoint over whatever this sets.
    """
    del model, config, images
    return None

  def saved(self, model: nnx.Module) -> nnx.Module:
    """The part that is saved and scored: the student, or the codec."""
    return model.student if self.split else model

  def input_norm(self, config) -> pipeline.Normalization:
    """How training and evaluation images are normalized for it."""
    return pipeline.normalization(config.backbone)

  def stages(self, config, value: float) -> list[Stage]:
    """The two distillation stages of a split method."""
    seed = self.seed(config, value)
    s1, s2 = config.stage1, config.stage2
    train = self.stage2_train(config)
    beta = self.rate_weight(value)
    return [
        Stage("stage1", _fit_config(s1, seed),
              dl.make_stage1_loss(
                  beta, reuse_teacher_features=self.frozen_prefix(config)),
              dl.stage1_trainable(self.train_acquisition(config)),
              ("mse", "bits_per_image"), s1.prior_lr_multiplier),
        Stage("stage2", _fit_config(s2, seed),
              dl.make_stage2_loss(
                  s2.alpha, s2.temperature,
                  beta=beta if train == "student" else 0.0),
              stage2_filter(train, self.train_acquisition(config)),
              ("kl", "bits_per_image"), s2.prior_lr_multiplier),
    ]

  def rate_weight(self, value: float) -> float:
    return value

  def train_acquisition(self, config) -> bool:
    return True

  def frozen_prefix(self, config) -> bool:
    return False

  def entropy_model(self, model: nnx.Module):
    """The trained `EntropyBottleneck` its tables are built from."""
    return self.saved(model).bottleneck.entropy

  # ------------------------------------------------------- the channel
  # The edge sends `saved.edge_symbols(x)` of the normalized images; the
  # server turns `saved.decode_symbols` of what arrives into features
  # (split methods, then the tail) or an image (the codec, then the
  # teacher): `split_rd_eval.Evaluator.learned`.

  def to_bytes(self, symbols, tables) -> list[bytes]:
    """The edge's symbols of a batch (numpy) -> one payload per image."""
    return [coding.compress(symbols[i:i + 1], tables)
            for i in range(len(symbols))]

  def from_bytes(self, payloads: list[bytes], tables):
    """Payloads -> the batch of symbols the server decodes from."""
    return np.concatenate([coding.decompress(p, tables) for p in payloads])


def _split_model(method: Method, teacher, config, value: float):
  """The student of ``saved_model.build`` beside the frozen teacher."""
  student = saved_model.build(
      method.name, teacher, split=config.split,
      section=config[method.section].to_dict(), value=value,
      seed=method.seed(config, value), channels=config.feature_channels)
  return dl.TeacherStudent(teacher, student)


class Hecsb(Method):
  """HECS-B: the teacher's prefix (or a shallow net), a 1×1 measurement."""

  name, section, values_key, label = "hecsb", "hecsb", "betas", "beta"

  def seed(self, config, value):
    # The first runs' seeds (no method name in them): their checkpoints
    # stay valid.
    return (config.seed + zlib.crc32(f"{value:g}".encode())) % 2**31

  def train_acquisition(self, config):
    return bool(config.hecsb.train_acquisition)

  def stage2_train(self, config):
    # Its own choice (chosen on dev); the baselines keep stage2.train.
    return config.hecsb.stage2_train

  def frozen_prefix(self, config):
    h = config.hecsb
    return h.acquisition == "prefix" and not h.train_acquisition

  def build(self, teacher, config, value):
    return _split_model(self, teacher, config, value)

  def start(self, model, config, images):
    h = config.hecsb
    if h.measurement_init == "random":
      return None
    if h.measurement_init != "principal":
      raise ValueError(f"hecsb.measurement_init must be 'random' or"
                       f" 'principal', got {h.measurement_init!r}")
    bottleneck = model.student.bottleneck
    x = images(int(h.principal_images))
    acquire = nnx.jit(lambda acquisition, batch: acquisition(batch))
    features = jnp.concatenate([
        acquire(bottleneck.acquisition, jnp.asarray(x[i:i + 32]))
        for i in range(0, len(x), 32)])
    directions = hb.principal_directions(features, h.num_measurements)
    bottleneck.start_at_principal_directions_(directions)
    flat = features.reshape(-1, features.shape[-1])
    kept = jnp.sum((flat @ directions) ** 2) / jnp.sum(flat ** 2)
    return (f"W and the decoder's linear path start at the top"
            f" {h.num_measurements} principal directions of {len(x)} images'"
            f" features (relative error {1 - float(kept):.3f})")


class Svb(Method):
  """SVB: a from-scratch encoder of three strided residual blocks."""

  name, section, values_key, label = "svb", "svb", "betas", "beta"

  def build(self, teacher, config, value):
    return _split_model(self, teacher, config, value)


class Crbq(Method):
  """CR+BQ: the teacher's prefix, a channel reduction to k, 8 bits."""

  name, section, values_key, label = "crbq", "crbq", "channels", "k"
  entropy_coded = False

  def rate_weight(self, value):
    return 0.0  # its bytes are fixed by k: no rate term

  def train_acquisition(self, config):
    return False

  def frozen_prefix(self, config):
    return True

  def build(self, teacher, config, value):
    return _split_model(self, teacher, config, value)

  def entropy_model(self, model):
    return None

  def to_bytes(self, symbols, tables):
    return crbq_lib.pack_batch(symbols)

  def from_bytes(self, payloads, tables):
    return crbq_lib.unpack_batch(payloads)


def _codec_loss(lmbda: float, patch: int) -> Callable:
  def loss_fn(model, batch, rng):
    patch_key, rng = jax.random.split(rng)
    x = codec_lib.random_patches(batch["image"], patch, patch_key)
    x_hat, aux = model(x, rng)
    return codec_lib.rate_distortion_loss(x, x_hat, aux["bits"], lmbda)

  return loss_fn


class NeuralCodec(Method):
  """Ballé et al. 2018's factorized-prior image codec, then the teacher."""

  name, section, values_key, label = ("neural_codec", "neural_codec",
                                      "lambdas", "lambda")
  split = False

  def build(self, teacher, config, value):
    return saved_model.build(
        self.name, teacher, split=config.split,
        section=config.neural_codec.to_dict(), value=value,
        seed=self.seed(config, value))

  def input_norm(self, config):
    return UNIT

  def stages(self, config, value):
    # The split methods' budget: as many epochs as their two stages,
    # stage 1's batch, optimizer and schedule.
    s1 = config.stage1
    return [Stage(
        "codec",
        _fit_config(s1, self.seed(config, value),
                    epochs=s1.epochs + config.stage2.epochs),
        _codec_loss(value, config.neural_codec.train_patch), nnx.Param,
        ("mse", "bpp"),
        s1.prior_lr_multiplier)]

  def entropy_model(self, model):
    return model.entropy


METHODS: dict[str, Method] = {
    m.name: m for m in (Hecsb(), Svb(), Crbq(), NeuralCodec())}


def learned(config) -> list[Method]:
  """The learned methods config.methods names, in its order."""
  return [METHODS[name] for name in config.methods if name in METHODS]


def images_from_unit(x: jax.Array) -> np.ndarray:
  """Decoded images in [0, 1] -> uint8, what the teacher's input path
  takes (the codec's output, rounded as an image file would be)."""
  return np.asarray(jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0), np.uint8)
